"""Helpers for tests that run trials or whole sweeps on real local Ray: a local Ray started and
stopped by the test, a tiny experiment over the shared synthetic shards, and its rows read raw
(duplicates show). tests/processes.py finds and kills a sweep started in a session of its own."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import pytest
import ray

from core.results import RUN_SPECIFIC, table_files
from core.threads import local_ray_options
from core.config import ExperimentConfig

TESTS = Path(__file__).resolve().parent


@contextmanager
def local_ray(**options):
    """A local Ray (2 CPUs unless ``options`` say otherwise) for the block, then stopped: only
    the Ray this test started, never others. Its workers find test modules by the names pytest
    gave them (tests/ on their PYTHONPATH): trainables and probes defined in a test module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
        ray.init(**{"num_cpus": 2, "include_dashboard": False, **local_ray_options(), **options})
        try:
            yield ray
        finally:
            ray.shutdown()


def tiny_experiment(root: Path, shards: Path, *, runs=1, epochs=1, **sections) -> ExperimentConfig:
    """An experiment over the shared synthetic shards (linked in as the split folder)."""
    (root / "shards").mkdir(parents=True)
    (root / "shards" / "split1").symlink_to(shards)
    data = {
        "experiment": {"name": "tiny", "root": str(root)},
        "model": {"arch": "resnet18", "input_size": 32},
        "train": {"runs": runs, "epochs": epochs, "batch_size": 32, "optimizer": "adamw", "lr": 0.002,
                  "val_fraction": 0.0, "channels_last": False},
        "eval": {"batch_size": 40},
        "loader": {"threads": 1, "device": "cpu"},
        "fusion": {"methods": ["mean"]},
        "ray": {"num_cpus": 2, "cpus_per_trial": 1, "max_failures": 2},
        "stages": ["train", "fuse"],
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values) if isinstance(values, dict) else data.update({name: values})
    return ExperimentConfig.from_dict(data)


def raw_rows(cfg: ExperimentConfig, table: str) -> pl.DataFrame:
    """Every row of every file (no newest-per-key dedup): duplicates would show here."""
    files = table_files(cfg.paths.results, table)
    return pl.concat([pl.read_parquet(f) for f in files]) if files else pl.DataFrame()


def assert_each_trial_once(cfg: ExperimentConfig) -> None:
    acc = raw_rows(cfg, "accuracy").filter(pl.col("stream") != "fusion")
    expected = {(s, r) for s in ("spatial", "temporal") for r in range(1, cfg.train.runs + 1)}
    assert sorted(acc.select("stream", "run").rows()) == sorted(expected)
    epochs = raw_rows(cfg, "epochs").filter(pl.col("phase") == "train")
    for (stream, run), rows in epochs.group_by("stream", "run"):
        assert sorted(rows["epoch"].to_list()) == list(range(1, cfg.train.epochs + 1)), (stream, run)




def comparable(cfg: ExperimentConfig, table: str, keys: list[str]) -> pl.DataFrame:
    """Every row of ``table`` without the columns that record when, where or how long
    (``core.results.RUN_SPECIFIC``)."""
    rows = raw_rows(cfg, table)
    return rows.select([c for c in rows.columns if c not in RUN_SPECIFIC]).sort(keys)
