"""The prune stage on real local Ray Tune and real shards: both streams' chains run, a trial
that crashes after step 1 is retried and resumes at step 2, a --resume rerun redoes nothing;
every step saves per-video scores that the fuse stage fuses step by step."""
from __future__ import annotations


import polars as pl
import pytest
import torch
from ray import tune

from core.results import table_files
from pipeline.prune_stage import run_prune_stage, run_prune_trial
from tests.sweeps import local_ray
from training.checkpoint import load_checkpoint, save_checkpoint
from core.config import ExperimentConfig
from training.data import class_names, read_manifest
from training.fusion import load_scores, run_fusion_stage
from training.models import build_stream
from pipeline.sweep import SweepContext
from pipeline.tune import make_tuner


def crash_once_after_step_1(params, experiment, resume=False):
    """prune_trial, except that its first attempt dies right after reporting step 1."""
    first_attempt = tune.get_checkpoint() is None

    def crash(row):
        if first_attempt and row["step"] == 1:
            raise RuntimeError("injected failure after step 1")

    cfg = ExperimentConfig.from_dict(experiment)
    tune.report(run_prune_trial(cfg, params["stream"], params["run"], after_step=crash))


@pytest.mark.slow
def test_prune_stage_retries_a_crashed_chain_from_its_last_step(tmp_path, synthetic_shards, monkeypatch):
    root = tmp_path / "exp"
    (root / "shards").mkdir(parents=True)
    (root / "shards" / "split1").symlink_to(synthetic_shards)
    cfg = ExperimentConfig.from_dict({
        "experiment": {"name": "tiny", "root": str(root)},
        "model": {"arch": "resnet18", "input_size": 32},
        "train": {"runs": 1, "batch_size": 32, "optimizer": "adamw", "val_fraction": 0.0, "channels_last": False},
        "eval": {"batch_size": 40},
        "loader": {"threads": 1, "device": "cpu"},
        "prune": {"steps": 2, "finetune_epochs": 1, "residual": True, "round_to": 8},
        "fusion": {"fit_on": "train"},  # no held-out videos (val_fraction 0)
        "ray": {"num_cpus": 2, "cpus_per_trial": 1, "max_failures": 2},
    })
    classes = class_names(read_manifest(synthetic_shards))
    for stream in ("spatial", "temporal"):  # untrained baselines: this test is about the mechanics
        torch.manual_seed(0)
        save_checkpoint(cfg.paths.checkpoint(stream, 1, 0), build_stream(stream, "resnet18", len(classes)),
                        epoch=0, config=cfg, classes=classes)
    with local_ray():
        results = make_tuner(cfg, trainable=crash_once_after_step_1, name="prune-crash").fit()
        assert len(results) == 2
        for result in results:
            assert result.error is None
            assert result.metrics["started_at_step"] == 2 and result.metrics["step"] == 2
        finished = {stream: cfg.paths.checkpoint(stream, 1, 2).stat().st_mtime_ns for stream in ("spatial", "temporal")}
        run_prune_stage(cfg, SweepContext(config=cfg, paths=cfg.paths, resume=False))  # plain rerun: nothing left to do
    assert {s: cfg.paths.checkpoint(s, 1, 2).stat().st_mtime_ns for s in finished} == finished

    rows = pl.concat([pl.read_parquet(f) for f in table_files(cfg.paths.results, "accuracy")])
    assert sorted(rows.select("stream", "step").rows()) == [("spatial", 1), ("spatial", 2),
                                                             ("temporal", 1), ("temporal", 2)]
    assert rows["channels_removed"].to_list() == pytest.approx(
        [1 - 0.96 ** k for k in rows["step"]], abs=0.01)  # round_to=8: the nearest reachable count
    for stream, in_channels in (("spatial", 3), ("temporal", 20)):
        model = load_checkpoint(cfg.paths.checkpoint(stream, 1, 2), classes=classes).model.eval()
        assert model.conv1.in_channels == in_channels
        assert model(torch.zeros(1, in_channels, 32, 32)).shape == (1, len(classes))

    # every step saved its scores (train too: SVM fusion is configured), so fuse fuses each step
    for stream in ("spatial", "temporal"):
        for step in (1, 2):
            test = load_scores(cfg.paths.scores(stream, 1, step, "test"))
            assert len(test.videos) == rows.filter(pl.col("stream") == stream)["n_videos"][0]
            assert cfg.paths.scores(stream, 1, step, "train").is_file()
    run_fusion_stage(cfg, None)
    fused = pl.concat([pl.read_parquet(f) for f in table_files(cfg.paths.results, "accuracy")]).filter(
        pl.col("stream") == "fusion")
    assert sorted(fused.select("fusion", "step").rows()) == sorted(
        (m, k) for m in cfg.fusion.methods for k in (1, 2))
    for step in (1, 2):
        streams = rows.filter(pl.col("step") == step)
        assert fused.filter(pl.col("step") == step)["prune_ratio"].to_list() == pytest.approx(
            [streams["prune_ratio"][0]] * len(cfg.fusion.methods))
