"""The sweep's driver (a job's entrypoint on the head node) never loads data or models: a whole
sweep (data, train, fuse, report) run in this process, on a real local Ray, builds no torch
module, DALI pipeline, video reader or writer here; the stages that are not Tune trials or
their own tasks (`pipeline.sweep.TASK_STAGES`) run as Ray tasks."""
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
def test_a_whole_sweep_loads_no_data_or_model_in_the_driver(tmp_path, driver_calls):
    cfg = ExperimentConfig.from_dict({
        "experiment": {"name": "driver", "root": str(tmp_path / "exp"), "seed": 0},
        "data": {"synthetic": {"classes": 8, "groups": 3, "clips": 2, "frames": 16, "width": 128,
                               "height": 96},
                 "split": 1, "clips_per_video": 2, "test_clips": 2, "short_side": 64, "workers": 2},
        "model": {"arch": "resnet18", "input_size": 32},
        "train": {"runs": 1, "epochs": 1, "batch_size": 16, "optimizer": "adamw", "lr": 0.002,
                  "val_fraction": 0.0, "channels_last": False},
        "eval": {"batch_size": 32},
        "loader": {"device": "cpu"},
        "fusion": {"methods": ["mean"]},
        "ray": {"num_cpus": 2, "cpus_per_trial": 1, "gpus_per_trial": 0, "max_failures": 0},
        "stages": ["data", "train", "fuse", "report"],
    })
    assert set(TASK_STAGES) == {"data", "report"}  # train, prune, fuse, explain: Tune trials or own tasks
    ctx = run_sweep(cfg)
    assert dict(driver_calls) == {}, f"the driver loaded data or built models: {dict(driver_calls)}"
    # and yet every stage did its work, elsewhere
    assert (ctx.paths.root / "videos").is_dir() and (ctx.paths.shards / "manifest.parquet").is_file()
    accuracy = read_table(ctx.paths.results, "accuracy")
    assert sorted(accuracy["stream"].to_list()) == ["fusion", "spatial", "temporal"]
    assert accuracy.filter(pl.col("stream") == "fusion")["fusion"].to_list() == ["mean"]
    assert (ctx.paths.report / "index.html").is_file()
