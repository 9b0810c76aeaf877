"""pipeline.cost_plan: the passes it plans are the passes a real sweep runs (counted with a
forward hook in the Ray trials), and its arithmetic on known answers."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.sweeps import local_ray
from core.config import ExperimentConfig
from pipeline.cost_plan import DEFAULT_CLIPS_PER_SECOND, model_flops, plan, throughputs, video_table

PASS_LOG = "CROSSROADS_TEST_PASS_LOG"


def _count_passes() -> None:
    """In this process (once, however many trials it runs), log every stream model forward:
    clips (crops) and train or eval mode; not the FLOP counter's (the plan leaves them out)."""
    import torch
    from torchvision.models import ResNet

    from pruning import accounting
    if getattr(accounting, "_passes_counted", False):
        return
    accounting._passes_counted = True
    folder = Path(os.environ[PASS_LOG])
    counting_flops = []
    run_flop_counter = accounting._run_flop_counter

    def flop_counter(model, input_size):
        counting_flops.append(True)
        try:
            return run_flop_counter(model, input_size)
        finally:
            counting_flops.pop()
    accounting._run_flop_counter = flop_counter

    def hook(module, inputs, output):
        if isinstance(module, ResNet) and not counting_flops:
            with open(folder / f"{os.getpid()}.log", "a") as f:
                f.write(f"{'train' if module.training else 'eval'} {inputs[0].shape[0]}\n")
    torch.nn.modules.module.register_module_forward_hook(hook)


def counted_train_trial(params, experiment, resume=False):
    from pipeline.tune import train_trial
    _count_passes()
    train_trial(params, experiment, resume)


def counted_prune_trial(params, experiment, resume=False):
    from pipeline.prune_stage import prune_trial
    _count_passes()
    prune_trial(params, experiment, resume)


def counted(folder: Path) -> dict:
    out = {"train": 0, "eval": 0}
    for log in folder.glob("*.log"):
        for line in log.read_text().split("\n"):
            if line:
                mode, n = line.split()
                out[mode] += int(n)
        log.unlink()
    return out


def tiny(root: Path, shards: Path) -> ExperimentConfig:
    (root / "shards").mkdir(parents=True)
    (root / "shards" / "split1").symlink_to(shards)
    return ExperimentConfig.from_dict({
        "experiment": {"name": "plan", "root": str(root)},
        "model": {"arch": "resnet18", "input_size": 32},
        "train": {"runs": 1, "epochs": 2, "batch_size": 16, "optimizer": "adamw", "val_fraction": 0.5,
                  "channels_last": False},
        "eval": {"batch_size": 40, "speed_repeats": 0},  # no timing passes (the plan leaves them out)
        "loader": {"threads": 1, "device": "cpu"},
        "fusion": {"methods": ["mean", "svm_softmax"], "fit_on": "heldout"},
        "prune": {"steps": 2, "step_fraction": 0.2, "finetune_epochs": 1, "chains": ["slimming", "random"]},
        "explain": {"steps": [0, 1]},
        "ray": {"num_cpus": 2, "cpus_per_trial": 1, "max_failures": 0},
        "stages": ["train", "prune", "fuse"],
    })


@pytest.mark.slow
def test_planned_passes_are_the_passes_a_sweep_runs(tmp_path, synthetic_shards, monkeypatch):
    """Train (2 epochs, validation each) and prune (slimming and random, 2 steps) on Ray Tune:
    eval passes (validation, test, the SVM fit videos) equal the plan's (the FLOP counter's, which
    it leaves out, are not counted); training passes are at
    most the plan's and short of it by less than one batch per epoch (the dropped last batch)."""
    from pipeline.prune_stage import STUDY_CHAIN  # noqa: F401  (the module the prune trials run)
    from pipeline.tune import make_tuner
    cfg = tiny(tmp_path / "exp", synthetic_shards)
    expected = {s["name"]: s for s in plan(cfg)["stages"]}
    logs = tmp_path / "passes"
    logs.mkdir()
    monkeypatch.setenv(PASS_LOG, str(logs))
    with local_ray():
        assert all(r.error is None for r in make_tuner(cfg, trainable=counted_train_trial).fit())
        measured = {"train": counted(logs)}
        for chain in cfg.prune.chains:
            one = ExperimentConfig.from_dict({**cfg.to_dict(), "prune": {**cfg.to_dict()["prune"], "chains": [chain]}})
            assert all(r.error is None for r in make_tuner(one, trainable=counted_prune_trial, name=f"prune-{chain}",
                                                           chains=[chain]).fit())
            measured[f"prune:{chain}"] = counted(logs)
    for name, got in measured.items():
        want = expected[name]
        # the FLOP counter's passes (pruning.accounting, one image a model shape) are not logged
        assert got["eval"] == want["forwards"] - want["backwards"], (name, got, want)
        epochs = cfg.train.epochs if name == "train" else cfg.prune.steps * cfg.prune.finetune_epochs
        batches = 2 * epochs  # two streams
        assert want["backwards"] - cfg.train.batch_size * batches < got["train"] <= want["backwards"], (name, got, want)


def test_plan_counts_on_known_answers(tmp_path, synthetic_shards):
    """The tiny sweep's plan by hand: 32 train videos in groups 2 and 3 (one held out per run),
    16 test videos, 5 clips each (the manifest)."""
    cfg = tiny(tmp_path / "exp", synthetic_shards)
    table, source = video_table(cfg)
    assert source.endswith("manifest.parquet") and table.height == 48
    stages = {s["name"]: s for s in plan(cfg)["stages"]}
    val, train, test = 16 * 5, 16 * 5, 16 * 5
    # per stream: 2 epochs x (train + val), then test + the held-out videos' scores
    assert stages["train"]["backwards"] == 2 * 2 * train
    light = 16 * 5  # eval.light_clips 5 of the 5 test clips, one crop
    assert stages["train"]["forwards"] == 2 * (2 * (train + val) + test + val + light)
    # slimming tests every step; random its explained steps (1) and the last (2): both steps;
    # no validation while fine-tuning
    for chain in ("slimming", "random"):
        assert stages[f"prune:{chain}"]["backwards"] == 2 * 2 * train
        assert stages[f"prune:{chain}"]["forwards"] == 2 * 2 * (train + test + val + light)
        assert stages[f"prune:{chain}"]["chain"] == chain
    assert "chain" not in stages["train"]


def test_validation_protocol_in_the_plan(tmp_path, synthetic_shards):
    """eval.val_clips of the 5 stored clips, val_ten_crop: 10 crops each."""
    cfg = tiny(tmp_path / "exp", synthetic_shards)
    small = ExperimentConfig.from_dict({**cfg.to_dict(), "eval": {**cfg.to_dict()["eval"], "val_clips": 2,
                                                                   "val_ten_crop": True}})
    train = {s["name"]: s for s in plan(small)["stages"]}["train"]
    assert train["forwards"] - train["backwards"] == 2 * (2 * 16 * 2 * 10 + 16 * 5 + 16 * 5 + 16 * 5)


def test_throughput_scales_with_flops():
    cfg = ExperimentConfig.from_dict({"model": {"arch": "resnet101", "input_size": 224}})
    assert throughputs(cfg, "spatial", 1.0, DEFAULT_CLIPS_PER_SECOND) == pytest.approx(DEFAULT_CLIPS_PER_SECOND)
    assert model_flops("resnet101", 224, 3) == pytest.approx(2 * 7.8e9, rel=0.01)  # torchvision: 7.8 GMACs
    assert model_flops("resnet18", 224, 3) == pytest.approx(2 * 1.81e9, rel=0.01)
    half = model_flops("resnet101", 224, 3, keep=0.5)
    assert model_flops("resnet101", 224, 3) * 0.25 < half < model_flops("resnet101", 224, 3) * 0.5
    small = ExperimentConfig.from_dict({"model": {"arch": "resnet18", "input_size": 112}})
    rate = throughputs(small, "spatial", 1.0, DEFAULT_CLIPS_PER_SECOND)["inference"]
    assert rate == pytest.approx(4500 * model_flops("resnet101", 224, 3) / model_flops("resnet18", 112, 3))


@pytest.mark.parametrize("stream,width", [("spatial", 0.25), ("temporal", 0.5)])
def test_planned_flops_of_a_narrow_model_are_its_counted_flops(stream, width):
    """model.width in the plan: the FLOPs it assumes equal torch's count of the narrowed model."""
    from pruning.accounting import count_flops
    from training.models import build_stream
    model = build_stream(stream, "resnet18", 101, width=width)
    planned = model_flops("resnet18", 48, model.conv1.in_channels, width=width)
    assert planned == pytest.approx(count_flops(model, 48), rel=0.005)
    assert planned < model_flops("resnet18", 48, model.conv1.in_channels) * width


def test_capacity_page_is_what_the_committed_plan_makes():
    """docs/CAPACITY.md is generated (scripts/capacity_doc.py) from docs/capacity_plan.json, and
    that JSON is the paper config's plan: where the official split lists are at hand, planned again."""
    import importlib.util
    import json
    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("capacity_doc", root / "scripts" / "capacity_doc.py")
    doc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(doc)
    committed = json.loads(doc.PLAN.read_text())
    assert doc.PAGE.read_text() == doc.markdown(committed)
    assert doc.main(["--check"]) == 0
    names = [s["name"] for s in committed["stages"]]
    assert names[0] == "train" and "prune:slimming" in names and committed["gpu_hours"] > 0
    candidates = [Path(os.environ["CROSSROADS_UCF101_SPLITS"])] if "CROSSROADS_UCF101_SPLITS" in os.environ else \
        [base / "shared" / "data" / "ucfTrainTestlist" for base in (root, root.parent, root.parent.parent)]
    for splits in (c for c in candidates if (c / "trainlist03.txt").is_file()):
        fresh = doc.make_plan(splits)
        assert fresh["stages"] == committed["stages"] and fresh["disk"] == committed["disk"]
        break
