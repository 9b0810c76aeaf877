"""Issue 25's recipe: per-stream train and fine-tuning settings, linear lr scaling, warm-up and
multistep schedules, model selection, named torchvision weights, the L1 pull budget, and
sparsity training that drives BatchNorm γ toward zero."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from pruning.groups import channel_groups, group_scores
from pruning.slimming import bn_l1_subgradient
from pipeline.budget import LIU_CIFAR, LIU_CIFAR_ITERATIONS, describe_budgets, l1_budget, liu_cifar_budget, \
    stream_budgets
from core.config import ConfigError, ExperimentConfig, TrainConfig, resolve_paths
from training.loop import lr_at, selection_rule, train
from training.models import build_stream, weights_name
from core.overrides import load_config
from pipeline.validation import config_problems

from batches import CLASSES, colour_batches

CONFIGS = Path(__file__).resolve().parents[1] / "ray_configs"

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors, one intra-op thread

def config(**sections) -> ExperimentConfig:
    return ExperimentConfig.from_dict({"experiment": {"name": "r"}, **sections})


def test_stream_settings_override_the_shared_ones_and_scale_the_lr_to_the_batch():
    cfg = config(model={"dropout": 0.5},
                 train={"lr": 0.001, "lr_batch": 256, "batch_size": 64, "epochs": 10,
                        "temporal": {"lr": 0.005, "epochs": 40, "dropout": 0.7, "batch_size": 32}},
                 prune={"lr": 0.0002, "finetune_epochs": 2, "sparsity": 1e-3, "temporal": {"lr": 0.001}})
    spatial, temporal = cfg.stream_train("spatial"), cfg.stream_train("temporal")
    assert spatial.lr == pytest.approx(0.001 * 64 / 256) and spatial.epochs == 10
    assert temporal.lr == pytest.approx(0.005 * 32 / 256) and temporal.epochs == 40
    assert spatial.lr_batch is None and temporal.spatial is None and temporal.temporal is None
    assert cfg.stream_dropout("spatial") == 0.5 and cfg.stream_dropout("temporal") == 0.7
    tune_s, tune_t = cfg.finetune_train("spatial"), cfg.finetune_train("temporal")
    assert (tune_s.lr, tune_s.epochs, tune_s.sparsity, tune_s.select) == (0.0002, 2, 1e-3, "last")
    assert (tune_t.lr, tune_t.batch_size, tune_t.warmup_epochs) == (0.001, 32, 0)
    # the sweep's --set reaches a stream's key, and a typo names the closest one
    cfg = load_config(CONFIGS / "demo.yaml", ["train.temporal.lr=0.3", "prune.spatial.finetune_epochs=3"])
    assert cfg.stream_train("temporal").lr == 0.3 and cfg.stream_prune("spatial").finetune_epochs == 3
    with pytest.raises(ConfigError, match="did you mean 'train.spatial.dropout'"):
        load_config(CONFIGS / "demo.yaml", ["train.spatial.dropuot=0.1"])
    with pytest.raises(ConfigError, match=r"train.spatial: unknown keys \['dropuot'\] \(did you mean 'train.spatial.dropout'"):
        config(train={"spatial": {"dropuot": 0.1}})
    with pytest.raises(ConfigError, match="runs"):  # shared by both streams: fusion pairs their runs
        config(train={"spatial": {"runs": 2}})
    with pytest.raises(ConfigError, match="train.temporal.lr"):
        config(train={"temporal": {"lr": "fast"}})


def test_each_streams_values_are_range_checked_under_the_key_that_set_them():
    with pytest.raises(ConfigError) as err:  # ranges: the schema's, while the config is built
        config(train={"epochs": 4, "spatial": {"lr": -1.0}, "temporal": {"dropout": 1.0}},
               prune={"temporal": {"lr": 0.0}}, eval={"light_clips": 0})
    assert str(err.value).splitlines() == ["train.spatial.lr: -1.0 is not allowed (must be > 0)",
                                           "train.temporal.dropout: 1.0 is not allowed (must be in [0, 1))",
                                           "eval.light_clips: 0 is not allowed (must be > 0)",
                                           "prune.temporal.lr: 0.0 is not allowed (must be > 0)"]
    # rules between keys (pipeline.validation): checked merged, named under the key that set them
    cfg = config(train={"epochs": 4, "spatial": {"warmup_epochs": 4},
                        "temporal": {"scheduler": "multistep", "milestones": [3, 2]}})
    problems = "\n".join(config_problems(cfg, ["train"]))
    for key in ("train.spatial.warmup_epochs", "train.temporal.milestones"):
        assert key in problems, key
    assert "train.warmup_epochs:" not in problems  # the shared value is fine


def test_warmup_ramps_then_the_schedule_runs_over_the_epochs_left():
    cfg = TrainConfig(lr=0.1, epochs=6, warmup_epochs=2, scheduler="cosine")
    assert [round(lr_at(cfg, e), 6) for e in range(6)] == [
        round(0.1 / 3, 6), round(0.2 / 3, 6), 0.1, 0.085355, 0.05, 0.014645]
    multistep = TrainConfig(lr=1.0, epochs=10, scheduler="multistep", milestones=[3, 7], gamma=0.1)
    assert [lr_at(multistep, e) for e in (0, 2, 3, 6, 7, 9)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_selection_keeps_the_best_val_accuracy_epoch_or_the_last():
    cfg = TrainConfig(epochs=4, batch_size=6, optimizer="sgd", lr=0.1, scheduler="none", device="cpu",
                      channels_last=False, weight_decay=0.0)
    assert selection_rule(cfg) == "last"
    assert selection_rule(dataclasses.replace(cfg, early_stopping_patience=2)) == "val_loss"
    weights = {}

    def remember(state, model, optimizer):
        weights[state.epoch] = {k: v.clone() for k, v in model.state_dict().items()}

    for rule in ("val_accuracy", "last"):
        torch.manual_seed(0)
        model = build_stream("spatial", "resnet18", len(CLASSES), dropout=0.25)
        result = train(model, colour_batches(), colour_batches(2, seed=1, shuffle_labels=True),
                       dataclasses.replace(cfg, select=rule), seed=0, on_epoch=remember)
        val = [r for r in result.state.history if r["phase"] == "val"]
        best = max(val, key=lambda r: (r["accuracy"], -r["loss"]))["epoch"] if rule != "last" else 4
        kept = {r["epoch"] for r in result.state.history if r["selected"]}
        assert kept == {best}
        assert {(r["select"], r["dropout"]) for r in result.state.history} == {(rule, 0.25)}
        for name, w in result.model.state_dict().items():
            assert torch.equal(w, weights[best][name]), (rule, name)


def test_weights_are_offered_by_version_and_recorded_by_name(tmp_path):
    assert weights_name("resnet101", "imagenet") == "ResNet101_Weights.IMAGENET1K_V2"  # today's default
    assert weights_name("resnet101", "IMAGENET1K_V1") == "ResNet101_Weights.IMAGENET1K_V1"
    assert weights_name("resnet18", "none") == "none"
    assert resolve_paths({"model": {"weights": "IMAGENET1K_V1"}}, tmp_path)["model"]["weights"] == "IMAGENET1K_V1"
    problems = config_problems(config(model={"arch": "resnet18", "weights": "IMAGENET1K_V2"}), ["train"])
    assert any("IMAGENET1K_V2" in p and "IMAGENET1K_V1" in p for p in problems), problems
    assert not config_problems(config(model={"arch": "resnet50", "weights": "IMAGENET1K_V2"}), ["train"])


def test_gamma_init_sets_every_batchnorm_scale():
    model = build_stream("temporal", "resnet18", 4, gamma_init=0.5)
    scales = [m.weight for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert scales and all(torch.all(w == 0.5) for w in scales)


def test_l1_budget_arithmetic():
    # Liu et al.'s CIFAR schedule: 1e-5 × 782 × (80·0.1 + 40·0.01 + 40·0.001) × 1/(1 − 0.9)
    assert liu_cifar_budget() == pytest.approx(1e-5 * 782 * 8.44 * 10, rel=1e-3)  # less the momentum start
    assert round(liu_cifar_budget(), 2) == 0.66
    sgd = l1_budget(TrainConfig(lr=0.1, epochs=2, scheduler="none", momentum=0.5, sparsity=1e-3,
                                weight_decay=1e-2), 10)
    moved = sum(0.1 * (1 - 0.5 ** (t + 1)) / 0.5 for t in range(20))  # the momentum buffer builds up
    assert (sgd.lr_sum, sgd.budget) == pytest.approx((2.0, 1e-3 * moved))
    assert sgd.gain == pytest.approx(moved / 2.0) and sgd.gain < 2.0
    assert sgd.decay_keeps == pytest.approx(math.exp(-1e-2 * moved))
    no_decay = l1_budget(TrainConfig(lr=0.1, epochs=2, scheduler="none", bn_weight_decay=False), 10)
    assert no_decay.decay_keeps == 1.0
    adamw = l1_budget(TrainConfig(optimizer="adamw", lr=0.01, epochs=1, sparsity=5.0), 7)
    assert adamw.budget == pytest.approx(0.07)  # Σlr, whatever λ
    assert l1_budget(LIU_CIFAR, LIU_CIFAR_ITERATIONS).epochs == 160


def test_the_paper_config_follows_tsn_and_its_budget_matches_liu_et_al():
    cfg = load_config(CONFIGS / "ucf101_split3.yaml")
    spatial, temporal = cfg.stream_train("spatial"), cfg.stream_train("temporal")
    scale = spatial.batch_size / 256  # TSN's batch
    assert spatial.lr == pytest.approx(0.001 * scale) and temporal.lr == pytest.approx(0.005 * scale)
    assert (cfg.stream_dropout("spatial"), cfg.stream_dropout("temporal")) == (0.8, 0.7)
    assert 4 <= temporal.epochs / spatial.epochs <= 5  # flow trains about five times longer
    assert cfg.model.weights == "IMAGENET1K_V1"
    for stream, (base, step) in stream_budgets(cfg, 9624).items():
        assert 0.5 <= base.budget / liu_cifar_budget() <= 1.5, (stream, base.text())
        assert step.budget < base.budget
    # the dry run shows the budgets (no split list here: the official list's count)
    text = "\n".join(describe_budgets(cfg))
    assert "spatial baseline: 0.6" in text and "temporal each fine-tuning step" in text


def test_the_demo_config_budget_can_take_its_initial_gamma_to_zero():
    cfg = load_config(CONFIGS / "demo.yaml")
    budgets = stream_budgets(cfg, 160)  # the synthetic design's train-list videos
    for stream, (base, _) in budgets.items():
        assert base.optimizer == "sgd" and base.budget >= cfg.model.gamma_init, (stream, base.text())


def test_the_sgd_budget_is_how_far_the_l1_term_alone_moves_a_gamma():
    cfg = TrainConfig(epochs=3, lr=0.05, momentum=0.9, scheduler="cosine", warmup_epochs=1, sparsity=1e-2,
                      weight_decay=0.0)
    gamma = torch.nn.Parameter(torch.tensor([1.0]))
    optimizer = torch.optim.SGD([gamma], lr=cfg.lr, momentum=cfg.momentum)
    for epoch in range(cfg.epochs):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(cfg, epoch)
        for _ in range(7):
            optimizer.zero_grad()
            gamma.grad = cfg.sparsity * torch.sign(gamma.detach())
            optimizer.step()
    assert 1.0 - gamma.item() == pytest.approx(l1_budget(cfg, 7).budget, rel=1e-5)


def prunable_gammas(model) -> torch.Tensor:
    return torch.cat([group_scores(model, g) for g in channel_groups(model, residual=False)])


def test_sparsity_training_drives_unimportant_gammas_toward_zero():
    """A small real training run: γ from 0.5 (Liu et al.) with λ chosen for a budget of ≈ 0.66
    (Liu et al.'s), against λ = 0 on the same seed and data."""
    cfg = TrainConfig(epochs=4, batch_size=6, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4,
                      scheduler="cosine", device="cpu", channels_last=False)
    batches = colour_batches(8)
    lam = 0.66 / l1_budget(dataclasses.replace(cfg, sparsity=1.0), len(batches)).budget
    trained = {}
    for sparsity in (0.0, lam):
        torch.manual_seed(0)
        model = build_stream("spatial", "resnet18", len(CLASSES), gamma_init=0.5)
        hook = (lambda m, s=sparsity: bn_l1_subgradient(m, s, residual=False)) if sparsity else None
        trained[sparsity] = prunable_gammas(train(model, batches, None, cfg, seed=0, after_backward=hook).model)
    plain, sparse = trained[0.0], trained[lam]
    assert plain.median() > 0.4 and (plain < 0.05).double().mean() < 0.01  # without the penalty γ stays near 0.5
    assert sparse.median() < 0.5 * plain.median()
    assert (sparse < 0.05).double().mean() > 0.25  # a good share of channels approach zero ...
    assert sparse.max() > 0.3  # ... while the ones the loss needs hold up: a prune can tell them apart


def test_the_light_protocol_reads_evenly_spaced_clips_with_one_crop(synthetic_shards):
    from shards.dali import make_loader
    from training.data import loader_config
    cfg = config(model={"input_size": 32}, eval={"light_clips": 2, "ten_crop": True, "batch_size": 40},
                 loader={"threads": 1, "device": "cpu"})
    light = make_loader(synthetic_shards / "test", loader_config(cfg, "spatial", train=False, light=True))
    seen: dict[str, set[int]] = {}
    for _ in range(2):  # the same clips every pass
        for batch in light:
            assert batch["x"].dim() == 4  # one crop, not ten
            for video, clip in zip(batch["video"], batch["clip"].tolist()):
                seen.setdefault(video, set()).add(clip)
    assert len(seen) == 16 and all(clips == {1, 3} for clips in seen.values())  # of 5 stored: 0..4


@pytest.mark.slow
def test_a_short_real_run_per_stream_records_its_own_settings(tmp_path, synthetic_shards):
    """Each setting reaches the trainer: real shards, real Tune trials, one epoch per stream."""
    import polars as pl

    from core.results import read_table
    from tests.sweeps import local_ray, tiny_experiment
    from pipeline.tune import make_tuner
    cfg = tiny_experiment(tmp_path / "x", synthetic_shards, epochs=1,
                          train={"val_fraction": 0.5, "optimizer": "sgd", "lr": 0.01, "lr_batch": 64,
                                 "spatial": {"dropout": 0.2, "select": "last"},
                                 "temporal": {"lr": 0.04, "dropout": 0.6, "select": "val_accuracy"}},
                          eval={"batch_size": 40, "light_clips": 2, "speed_repeats": 0})
    with local_ray():
        assert all(r.error is None for r in make_tuner(cfg).fit())
    epochs = read_table(cfg.paths.results, "epochs").filter(pl.col("phase") == "train").sort("stream")
    assert epochs.select("stream", "lr", "dropout", "select", "selected").rows() == [
        ("spatial", pytest.approx(0.01 * 32 / 64), 0.2, "last", True),
        ("temporal", pytest.approx(0.04 * 32 / 64), 0.6, "val_accuracy", True)]
    accuracy = read_table(cfg.paths.results, "accuracy").sort("stream")
    assert accuracy["weights"].to_list() == ["none", "none"]
    assert all(0 <= a <= 100 for a in accuracy["video_accuracy_before_finetune"])  # the light protocol's step 0
