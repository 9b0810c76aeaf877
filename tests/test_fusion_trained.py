"""Fusion of trained streams on the synthetic ring set, through the real sweep (data → train →
fuse on a local Ray): each stream alone beats chance by a wide margin, and every fusion
method beats both streams, as the class design promises (one frame or the flow alone narrows
8 classes to 2; together they decide)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from core.results import read_table
from tests.processes import kill_session
from tests.layout import REPO

CHANCE = 100 / 8


def ring_experiment(root: Path) -> dict:
    """Many short videos (6 per group and class, 16 frames, 2 clips each): with few clips of
    many videos a small network learns colour and motion instead of memorising videos."""
    return {
        "experiment": {"name": "ring", "root": str(root), "seed": 0},
        "data": {"synthetic": {"classes": 8, "appearances": 4, "design": "ring", "groups": 6, "clips": 6,
                               "frames": 16, "width": 128, "height": 96},
                 "split": 1, "clips_per_video": 2, "test_clips": 3, "short_side": 64, "workers": 2},
        "model": {"arch": "resnet18", "input_size": 64},
        "train": {"runs": 1, "epochs": 6, "batch_size": 16, "optimizer": "adamw", "lr": 0.002,
                  "weight_decay": 0.0001, "scheduler": "cosine", "val_fraction": 0.0, "channels_last": False},
        "loader": {"threads": 1, "crop_mode": "random", "flip": False},
        "eval": {"batch_size": 32},
        "fusion": {"methods": ["mean", "svm_softmax", "svm_features"], "fit_on": "train"},  # no val videos
        "ray": {"num_cpus": 2, "cpus_per_trial": 1, "max_failures": 0},
        "stages": ["data", "train", "fuse"],
    }


@pytest.mark.slow
def test_fusion_of_trained_streams_beats_each_stream(tmp_path):
    config = tmp_path / "ring.yaml"
    config.write_text(yaml.safe_dump(ring_experiment(tmp_path / "exp")))
    log = open(tmp_path / "sweep.log", "w")
    sweep = subprocess.Popen([sys.executable, "-m", "pipeline.sweep", "--config", str(config)], cwd=REPO,
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        code = sweep.wait(timeout=600)
    finally:
        kill_session(sweep.pid)  # whatever is left of its local Ray, by pid
        log.close()
    assert code == 0, (tmp_path / "sweep.log").read_text()[-3000:]

    acc = read_table(tmp_path / "exp" / "results", "accuracy")
    video = {(row["stream"], row["fusion"]): row["video_accuracy"] for row in acc.iter_rows(named=True)}
    spatial, temporal = video[("spatial", None)], video[("temporal", None)]
    assert acc.filter(pl.col("stream") != "fusion")["n_videos"].to_list() == [96, 96]
    assert spatial >= 2 * CHANCE and temporal >= 2 * CHANCE, video
    for method in ("mean", "svm_softmax", "svm_features"):
        assert video[("fusion", method)] > max(spatial, temporal) + 5, (method, video)
