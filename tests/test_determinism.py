"""#15.4 and #15.6 through the real sweep (``python -m pipeline.sweep``, its own local Ray):

- a tiny experiment from synthetic videos (data, train, prune, fuse, explain) run twice — the
  second time with twice the DALI threads and a CPU-burning process beside it — gives
  bit-equal `accuracy`, `epochs` and `irof` rows;
- no Ray worker of either run died of a fatal error (the demo once logged a `build_shard`
  worker aborting at the data → train handover: absl "Mutex corrupt", SIGABRT).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from tests.processes import kill_session
from tests.sweeps import comparable
from core.config import ExperimentConfig
from tests.layout import REPO

# what a worker that died badly leaves in its logs (Python, glibc, absl, Ray's C++ checks)
FATAL = re.compile(r"Fatal Python error|SIGABRT|SIGSEGV|Mutex corrupt|Check failed|"
                   r"terminate called|double free|corrupted size")


def config(root: Path, **changes) -> dict:
    cfg = {
        "experiment": {"name": "det", "root": str(root), "seed": 0},
        "data": {"synthetic": {"classes": 8, "appearances": 4, "design": "ring", "groups": 3, "clips": 2,
                               "frames": 16, "width": 96, "height": 72},
                 "split": 1, "flow": "dis", "clips_per_video": 2, "test_clips": 2, "short_side": 48,
                 "workers": 2},
        "model": {"arch": "resnet18", "input_size": 32},
        "train": {"runs": 1, "epochs": 2, "batch_size": 16, "optimizer": "adamw", "lr": 0.002,
                  "val_fraction": 0.5, "channels_last": False},
        "loader": {"threads": 1, "device": "cpu", "crop_mode": "random", "flip": False},
        "eval": {"batch_size": 32},
        "fusion": {"methods": ["mean", "svm_features"]},
        "prune": {"step_fraction": 0.2, "steps": 1, "finetune_epochs": 1, "round_to": 8},
        "explain": {"steps": [0, 1], "max_videos": 2},
        "ray": {"num_cpus": 2, "cpus_per_trial": 1, "max_failures": 0},
        "stages": ["data", "train", "prune", "fuse", "explain"],
    }
    for key, value in changes.items():
        section, name = key.split(".")
        cfg[section][name] = value
    return cfg


def run_sweep(cfg: dict, tmp_path: Path, name: str, *, loaded: bool = False) -> tuple[ExperimentConfig, list[Path]]:
    """The sweep CLI with a Ray temp dir of its own; returns the config and its Ray logs.
    ``loaded``: a process burns a CPU from the first stage on (after Ray's start-up, which
    times out on an overloaded 2-core machine) until the sweep ends."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    ray_tmp = Path(tempfile.mkdtemp(prefix="rf-det-", dir="/tmp"))  # short: Ray's socket paths
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp)}
    env.pop("RAY_ADDRESS", None)
    log = tmp_path / f"{name}.log"
    with open(log, "w") as out:
        sweep = subprocess.Popen([sys.executable, "-m", "pipeline.sweep", "--config", str(path)], cwd=REPO,
                                 env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        burner = None
        try:
            deadline = time.time() + 900
            while sweep.poll() is None and time.time() < deadline:
                if loaded and burner is None and "stage " in log.read_text(errors="replace"):
                    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                time.sleep(1)
            code = sweep.poll()
        finally:
            kill_session(sweep.pid)  # whatever of its local Ray is left, by pid
            if burner is not None:
                burner.kill()
                burner.wait()
    assert loaded is False or burner is not None, "the sweep ended before the load started"
    assert code == 0, log.read_text()[-4000:]
    logs = [p for p in ray_tmp.rglob("logs/*") if p.is_file()]
    kept = tmp_path / f"{name}-ray-logs"
    kept.mkdir()
    for p in logs:
        shutil.copy(p, kept / p.name)
    shutil.rmtree(ray_tmp, ignore_errors=True)
    return ExperimentConfig.from_dict(cfg), [kept / p.name for p in logs] + [log]


def fatal_lines(logs: list[Path]) -> list[str]:
    return [f"{p.name}: {line.strip()}" for p in logs
            for line in p.read_text(errors="replace").splitlines() if FATAL.search(line)]


@pytest.mark.slow
def test_sweep_gives_bit_equal_rows_under_load_and_no_worker_dies(tmp_path):
    first, first_logs = run_sweep(config(tmp_path / "first"), tmp_path, "first")
    assert any("build_shard" in p.read_text(errors="replace") or "ShardBuilder" in p.read_text(errors="replace")
               for p in first_logs if p.name.startswith("worker-")), "no ingest worker logs were scanned"
    # the second run: other DALI thread counts, the shards of the first (ingest is compared in
    # test_ingest_resume), and a process burning a CPU the whole time
    second_root = tmp_path / "second"
    (second_root / "shards").mkdir(parents=True)
    (second_root / "shards" / "split1").symlink_to(first.paths.shards)
    second, second_logs = run_sweep(config(second_root, **{"loader.threads": 2}) | {
        "stages": ["train", "prune", "fuse", "explain"]}, tmp_path, "second", loaded=True)
    assert fatal_lines(first_logs + second_logs) == []
    for table, keys in (("accuracy", ["stream", "fusion", "run", "step"]),
                        ("epochs", ["stream", "run", "step", "epoch", "phase"]),
                        ("irof", ["stream", "run", "step", "video", "clip", "method"])):
        a, b = comparable(first, table, keys), comparable(second, table, keys)
        assert a.height and a.equals(b), (table, a, b)
    pruned = comparable(first, "accuracy", ["stream"]).filter(pl.col("step") == 1)
    assert sorted(pruned["stream"]) == ["fusion", "fusion", "spatial", "temporal"]  # pruned and fused too
