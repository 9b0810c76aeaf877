"""Issue 27 end to end: a tiny whole sweep (data → train → prune → fuse → explain → report) on a
real local Ray runs the three chains; every table carries them; a rerun redoes nothing.

The sweep runs in this process, as a job's entrypoint runs on the head node: its driver never
loads data or models. No torch module, DALI pipeline, video reader or writer is built here;
the stages that are not Tune trials or their own tasks (`pipeline.sweep.TASK_STAGES`) run as
Ray tasks."""
from __future__ import annotations

from collections import Counter

import av
import cv2
import nvidia.dali as dali
import polars as pl
import pytest
import torch

from core.results import read_table
from core.config import ExperimentConfig
from pipeline.sweep import TASK_STAGES, run_sweep


@pytest.fixture
def driver_calls(monkeypatch) -> Counter:
    """Counts, in this process only, every model built and every pipeline, video reader or
    writer opened (each wrapped, then called as before)."""
    calls = Counter()

    def spy(owner, name, label):
        original = getattr(owner, name)

        def counted(*args, **kwargs):
            calls[label] += 1
            return original(*args, **kwargs)
        monkeypatch.setattr(owner, name, counted)

    spy(torch.nn.Module, "__init__", "torch module")
    spy(dali.Pipeline, "__init__", "DALI pipeline")
    spy(av, "open", "video decode (av)")
    spy(cv2, "VideoCapture", "video decode (cv2)")
    spy(cv2, "VideoWriter", "video write (cv2)")
    return calls


@pytest.mark.slow
def test_a_sweep_runs_the_controls_and_a_rerun_resumes_them_and_its_driver_loads_nothing(tmp_path, driver_calls):
    cfg = ExperimentConfig.from_dict({
        "experiment": {"name": "chains", "root": str(tmp_path / "exp"), "seed": 0},
        "data": {"synthetic": {"classes": 4, "appearances": 2, "design": "ring", "groups": 3, "clips": 1,
                               "frames": 12, "width": 64, "height": 48},
                 "split": 1, "clips_per_video": 1, "test_clips": 2, "short_side": 32, "workers": 2},
        "model": {"arch": "resnet18", "input_size": 32},
        "train": {"runs": 2, "epochs": 1, "batch_size": 4, "optimizer": "adamw", "lr": 0.002,
                  "val_fraction": 0.0, "channels_last": False},
        "eval": {"batch_size": 16, "speed_repeats": 0},
        "loader": {"device": "cpu", "threads": 1, "flip": False},
        "fusion": {"methods": ["mean"]},
        "prune": {"steps": 2, "step_fraction": 0.2, "round_to": 8,
                  "chains": ["slimming", "finetune_only", "random"]},
        "explain": {"steps": [0, 1], "max_videos": 2, "batch_size": 4, "forward_batch": 64},
        "ray": {"num_cpus": 2, "cpus_per_trial": 1, "gpus_per_trial": 0, "max_failures": 0},
        "stages": ["data", "train", "prune", "fuse", "explain", "report"],
    })
    assert set(TASK_STAGES) == {"data", "report"}  # train, prune, fuse, explain: Tune trials or own tasks
    ctx = run_sweep(cfg)
    assert dict(driver_calls) == {}, f"the driver loaded data or built models: {dict(driver_calls)}"
    assert (ctx.paths.root / "videos").is_dir() and (ctx.paths.shards / "manifest.parquet").is_file()
    results = ctx.paths.results
    accuracy = read_table(results, "accuracy")
    per_chain = {(s, c): sorted(set(part["step"])) for (s, c), part in
                 accuracy.group_by("stream", "chain")}
    for stream in ("spatial", "temporal", "fusion"):
        assert per_chain[(stream, "slimming")] == [0, 1, 2]
        # controls: tested at explain.steps (1) and the last step (2), from the shared step 0
        assert per_chain[(stream, "finetune_only")] == per_chain[(stream, "random")] == [1, 2]
    assert accuracy.filter(pl.col("stream") != "fusion")["ece"].is_not_null().all()
    finetune = accuracy.filter((pl.col("chain") == "finetune_only") & (pl.col("stream") == "spatial"))
    assert (finetune["channels_removed"] == 0).all()
    assert accuracy.filter(pl.col("chain") == "random")["channels_removed"].min() > 0.1

    irof = read_table(results, "irof")
    assert sorted(set(irof.select("chain", "step").rows())) == [
        ("finetune_only", 1), ("finetune_only", 2), ("random", 1), ("random", 2), ("slimming", 0), ("slimming", 1)]
    assert irof["irof_random"].is_not_null().all()
    change = read_table(results, "saliency_change")
    reference = change.filter(pl.col("step") == 0)  # run 2's unpruned maps against run 1's
    assert set(reference["run"]) == {2} and set(reference["base_run"]) == {1} and reference.height == 2 * 2
    assert change.filter(pl.col("step") > 0)["spearman_same"].is_not_null().any()
    assert set(read_table(results, "gammas")["chain"]) == {"slimming", "finetune_only", "random"}
    assert set(read_table(results, "epochs")["chain"]) == {"slimming", "finetune_only", "random"}
    assert (ctx.paths.report / "index.html").is_file()

    # a plain rerun: every chain's steps, fusions and explanations are found done
    files = {p: p.stat().st_mtime_ns for p in results.rglob("*.parquet")}
    checkpoints = {p: p.stat().st_mtime_ns for p in ctx.paths.checkpoints.rglob("*.pt")}
    assert len([p for p in checkpoints if "random" in p.parts]) == 2 * 2 * 2  # streams x runs x steps
    run_sweep(cfg)
    assert {p: p.stat().st_mtime_ns for p in ctx.paths.checkpoints.rglob("*.pt")} == checkpoints
    changed = [p for p in results.rglob("*.parquet") if files.get(p) != p.stat().st_mtime_ns]
    assert changed == [], changed
