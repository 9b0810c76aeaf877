"""A real sweep stopped by Ctrl-C and a results store damaged under it (issue 31).

SIGINT while the train stage runs stops the sweep at once (exit 130, no further stage, the
root's lock released, Ray's processes gone) with one line naming the command that continues;
that command finishes the grid with every row once. Parts cut short are then named, set aside
as ``*.damaged`` and rebuilt by a plain rerun, whose rows equal the undamaged ones.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time

import polars as pl
import pytest
import yaml

from analysis.results import table_path
from shards.lock import LOCK_NAME
from tests.result_files import cut_short
from tests.sweeps import kill_session, raw_rows, session_pids, tiny_experiment
from tests.layout import REPO

# what must come out the same however the grid got finished (not timings, hosts or times)
SAME = ["stream", "fusion", "run", "step", "loss", "clip_accuracy", "video_accuracy", "channels_removed"]


def grid(cfg) -> pl.DataFrame:
    """Every accuracy row of every file (duplicates would show), in a fixed order."""
    return raw_rows(cfg, "accuracy").select(SAME).sort("stream", "fusion", "step", nulls_last=False)


def sweep(command: list[str], env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *command[1:]], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_ctrl_c_stops_the_sweep_and_reruns_rebuild_exactly_what_is_missing(tmp_path, synthetic_shards):
    cfg = tiny_experiment(tmp_path / "exp", synthetic_shards, epochs=2, stages=["train", "prune", "fuse"],
                          prune={"steps": 1, "finetune_epochs": 1})
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = tmp_path / "stdout.txt"
    with open(log, "w") as stdout:
        proc = subprocess.Popen([sys.executable, "-m", "training.sweep", "--config", str(config)], cwd=REPO,
                                env=env, stdout=stdout, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while "epoch 1/2" not in log.read_text():  # a train trial is under way (its first epoch line)
            assert proc.poll() is None and time.monotonic() < deadline, (log.read_text(), proc.stderr.read())
            time.sleep(0.5)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
        stopped_in = time.monotonic() - sent
    finally:
        kill_session(proc.pid)
    out = log.read_text()
    assert proc.returncode == 130, (out[-3000:], stderr[-3000:])
    lines = [line for line in stderr.splitlines() if line.startswith("sweep stopped by SIGINT")]
    assert len(lines) == 1, stderr[-3000:]
    assert "during stage train (1/3); finished stages: none" in lines[0]
    assert "stage prune" not in out and "stage train (1/3): done" not in out  # no further stage
    assert not (cfg.paths.root / LOCK_NAME).exists() and stopped_in < 60
    time.sleep(1)
    assert session_pids(proc.pid) == []  # trials, tasks and the local Ray are gone

    continued = shlex.split(lines[0].split("continue with: ", 1)[1])
    assert continued == ["python", "-m", "training.sweep", "--config", str(config)]
    done = sweep(continued, env)
    assert done.returncode == 0, done.stderr[-3000:]
    finished = grid(cfg)
    assert finished.select("stream", "step").rows() == [  # the whole grid, every row once
        ("fusion", 0), ("fusion", 1), ("spatial", 0), ("spatial", 1), ("temporal", 0), ("temporal", 1)]

    # damage: a train cell, a pruning step, a fused row and a training curve, each cut short
    results = cfg.paths.results
    damaged = [table_path(results, "accuracy", "temporal/run1/step0"),
               table_path(results, "accuracy", "spatial/run1/step1"),
               table_path(results, "epochs", "spatial/run1/step0"),
               *sorted((results / "accuracy" / "fusion").rglob("*.parquet"))[:1]]
    for part in damaged:
        cut_short(part)
    rerun = sweep(continued, env)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    for part in damaged:
        assert f"{part} cannot be read" in rerun.stderr and part.with_name(part.name + ".damaged").is_file()
        assert part.is_file()  # rebuilt
    assert grid(cfg).equals(finished), (grid(cfg), finished)
    epochs = raw_rows(cfg, "epochs").filter((pl.col("stream") == "spatial") & (pl.col("step") == 0))
    assert sorted(epochs.filter(pl.col("phase") == "train")["epoch"].to_list()) == [1, 2]


@pytest.mark.slow
def test_resume_rebuilds_a_damaged_cell_that_tune_counts_finished(tmp_path, synthetic_shards):
    """A restored Tuner never reruns a trial its state saw finish: the stage refits the cells
    whose rows the store lacks (training.tune.unfinished_cells)."""
    from training.sweep import run_sweep

    cfg = tiny_experiment(tmp_path / "exp", synthetic_shards, stages=["train"])
    run_sweep(cfg)
    before = grid(cfg)
    part = table_path(cfg.paths.results, "accuracy", "spatial/run1/step0")
    cut_short(part)
    run_sweep(cfg, resume=True)
    assert part.is_file() and part.with_name(part.name + ".damaged").is_file()
    assert grid(cfg).equals(before), (grid(cfg), before)
