"""Network Slimming as published: sparsity training shrinks |γ|, each step's threshold and |γ|
histogram are recorded, and every accuracy row carries channels/params/FLOPs removed."""
from __future__ import annotations

import polars as pl
import pytest
import torch

from core.results import read_table
from pruning.groups import channel_groups, count_prunable_channels, group_scores
from pruning.schedule import ChainLoaders, run_chain
from pruning.slimming import bn_l1_subgradient, gamma_histogram, prune_threshold, select_channels
from training.checkpoint import load_checkpoint
from core.config import ExperimentConfig
from training.loop import train
from training.models import build_stream

from batches import CLASSES, colour_batches
from batches import colour_experiment

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors, one intra-op thread

def mean_abs_gamma(model, residual):
    return torch.cat([group_scores(model, g) for g in channel_groups(model, residual=residual)]).mean().item()


@pytest.mark.parametrize("residual", [False, True])
def test_sparsity_training_shrinks_gamma(residual, tmp_path):
    """The same short real training run with and without the BN-L1 penalty (the baseline trial's
    hook): with it, mean |γ| of the penalised BatchNorms ends clearly lower."""
    cfg = ExperimentConfig.from_dict({
        "experiment": {"name": "s", "root": str(tmp_path), "seed": 0},
        "train": {"epochs": 1, "batch_size": 6, "optimizer": "sgd", "lr": 0.05, "weight_decay": 0.0,
                  "device": "cpu", "channels_last": False, "amp": False, "val_fraction": 0.0},
    }).train
    batches = colour_batches(3, seed=0)
    means = {}
    for sparsity in (0.0, 0.2):
        torch.manual_seed(0)
        model = build_stream("spatial", "resnet18", len(CLASSES))
        hook = (lambda m, s=sparsity: bn_l1_subgradient(m, s, residual=residual)) if sparsity else None
        train(model, batches, None, cfg, after_backward=hook, seed=0)
        means[sparsity] = mean_abs_gamma(model, residual)
    assert means[0.2] < 0.95 * means[0.0], means


def test_threshold_is_the_highest_removed_score():
    torch.manual_seed(0)
    model = build_stream("spatial", "resnet18", len(CLASSES))
    groups = channel_groups(model, residual=False)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for group in groups:
            for bn in group.bns:
                modules[bn].weight.copy_(torch.rand(group.width) + 0.01)
    plan = select_channels(model, 0.25, residual=False, min_channels=1)
    scores = torch.cat([group_scores(model, g) for g in groups])
    n_removed = sum(g.width for g in groups) - sum(len(keep) for _, keep in plan)
    assert prune_threshold(model, plan) == pytest.approx(torch.sort(scores).values[n_removed - 1].item())
    assert prune_threshold(model, select_channels(model, 0.0, residual=False)) is None
    histogram = gamma_histogram(model, residual=False)
    assert sum(row["count"] for row in histogram) == scores.numel()


def test_chain_records_threshold_gammas_and_fractions(tmp_path):
    cfg = colour_experiment(tmp_path)
    rows = run_chain(cfg, "spatial", 1, ChainLoaders(colour_batches(2, seed=0), None, colour_batches(1, seed=1)))
    accuracy = read_table(cfg.paths.results, "accuracy").sort("step")
    assert accuracy["residual"].to_list() == [True, True]
    assert all(t is not None and t > 0 for t in accuracy["threshold"])
    for column in ("channels_removed", "params_removed", "flops_removed"):
        assert all(0 < value < 1 for value in accuracy[column]), column
    gammas = read_table(cfg.paths.results, "gammas")
    assert sorted(set(gammas["step"])) == [1, 2] and set(gammas["phase"]) == {"finetuned"}
    pruned_channels = {step: count_prunable_channels(load_checkpoint(cfg.paths.checkpoint("spatial", 1, step),
                                                                     classes=CLASSES).model, residual=True)
                       for step in (1, 2)}
    per_step = gammas.group_by("step").agg(pl.col("count").sum(), pl.col("threshold").first())
    thresholds = dict(zip(accuracy["step"], accuracy["threshold"]))
    for step, count, threshold in per_step.iter_rows():
        assert threshold == pytest.approx(thresholds[step])
        assert count == pruned_channels[step]  # every prunable channel of the pruned model is counted
    assert len(rows) == 2


@pytest.mark.slow  # two real train trials on DALI shards (and the shared shard fixture)
def test_baseline_trial_trains_with_the_penalty(tmp_path, synthetic_shards):
    """The train stage's own trial (``run_trial``, outside Tune: its reports are no-ops) with and
    without ``train.sparsity``, same seed and data: the penalty acts in the baseline training itself,
    not only while fine-tuning (``prune.sparsity`` is the same in both), so the saved step-0 model
    has clearly smaller |γ|; both record their |γ| before and after training."""
    from tests.sweeps import tiny_experiment
    from pipeline.tune import run_trial

    means = {}
    for sparsity in (0.0, 0.2):
        cfg = tiny_experiment(tmp_path / f"s{sparsity}", synthetic_shards,
                              train={"optimizer": "sgd", "lr": 0.1, "weight_decay": 0.0, "sparsity": sparsity,
                                     "device": "cpu", "amp": False},
                              prune={"sparsity": 1e-5, "residual": False})
        run_trial(cfg, "spatial", 1)
        model = load_checkpoint(cfg.paths.checkpoint("spatial", 1, 0)).model
        means[sparsity] = mean_abs_gamma(model, residual=False)
        gammas = read_table(cfg.paths.results, "gammas")
        assert sorted(set(gammas["phase"])) == ["initial", "trained"] and set(gammas["step"]) == {0}
        assert gammas.group_by("phase").agg(pl.col("count").sum())["count"].to_list() == \
            [count_prunable_channels(model, residual=False)] * 2
    assert means[0.2] < 0.9 * means[0.0], means
