"""A real sweep stopped by Ctrl-C and a results store damaged under it (issue 31).

SIGINT while the train stage runs stops the sweep at once (exit 130, no further stage, the
root's lock released, Ray's processes gone) with one line naming the command that continues;
that command, stopped in turn by SIGTERM in the prune stage (143, the same), then run again,
finishes the grid with every row once. Parts cut short are then named, set aside
as ``*.damaged`` and rebuilt by a plain rerun, whose rows equal the undamaged ones, also
where a part's inputs (a score file, the checkpoint that makes it) are gone or damaged too.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from core.results import table_path
from core.lock import LOCK_NAME
from tests.processes import signal_when
from tests.layout import REPO
from tests.result_files import cut_short
from tests.sweeps import raw_rows, tiny_experiment
from training.checkpoint import load_checkpoint

# what must come out the same however the grid got finished (not timings, hosts or times)
SAME = ["stream", "fusion", "run", "step", "loss", "clip_accuracy", "video_accuracy", "channels_removed"]


def grid(cfg) -> pl.DataFrame:
    """Every accuracy row of every file (duplicates would show), in a fixed order."""
    return raw_rows(cfg, "accuracy").select(SAME).sort("stream", "fusion", "step", nulls_last=False)


def sweep(command: list[str], env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *command[1:]], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def stopped_sweep(command: list[str], env: dict, log: Path, ready: str, signum: int):
    """Start the sweep ``command``, send ``signum`` once its stdout shows ``ready``; (exit
    status, its stdout, what ``signal_when`` saw)."""
    with open(log, "w") as stdout:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=stdout, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    stopped = signal_when(proc, lambda: ready in log.read_text(), signum, shown=lambda: log.read_text()[-3000:])
    return proc.returncode, log.read_text(), stopped


def assert_stopped(status: int, out: str, stopped, signum: int, during: str, finished: str, cfg) -> list[str]:
    """Exit 128 + signum, one line naming the stage and what finished, no further stage, the
    root's lock released, no process of the sweep's session left; the command it prints."""
    name = signal.Signals(signum).name
    assert status == 128 + signum, (out[-3000:], stopped.stderr[-3000:])
    lines = [line for line in stopped.stderr.splitlines() if line.startswith(f"sweep stopped by {name}")]
    assert len(lines) == 1, stopped.stderr[-3000:]
    assert f"during stage {during}; finished stages: {finished} " in lines[0], lines[0]
    assert f"stage {during}: done" not in out  # the stopped stage is not reported finished
    assert not (cfg.paths.root / LOCK_NAME).exists() and stopped.seconds < 60, stopped.seconds
    assert stopped.left == []  # trials, tasks and the local Ray are gone
    return shlex.split(lines[0].split("continue with: ", 1)[1])


@pytest.mark.slow
def test_ctrl_c_stops_the_sweep_and_reruns_rebuild_exactly_what_is_missing(tmp_path, synthetic_shards):
    """SIGINT during train, then SIGTERM (a scheduler's) during prune of the printed command's
    run, then that command again: the whole grid, every row once; then damage, rebuilt."""
    cfg = tiny_experiment(tmp_path / "exp", synthetic_shards, epochs=2, stages=["train", "prune", "fuse"],
                          prune={"steps": 1, "finetune_epochs": 1})
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "pipeline.sweep", "--config", str(config)]

    # Ctrl-C once a train trial is under way (its first epoch line)
    status, out, stopped = stopped_sweep(command, env, tmp_path / "first.txt", "epoch 1/2", signal.SIGINT)
    continued = assert_stopped(status, out, stopped, signal.SIGINT, "train (1/3)", "none", cfg)
    assert "stage prune" not in out  # no further stage
    assert continued == ["python", "-m", "pipeline.sweep", "--config", str(config)]

    # the printed command continues; a scheduler's SIGTERM stops it in the next stage
    status, out, stopped = stopped_sweep([sys.executable, *continued[1:]], env, tmp_path / "second.txt",
                                         "stage prune (2/3): running", signal.SIGTERM)
    assert "stage train (1/3): done" in out  # the interrupted stage was finished first
    assert assert_stopped(status, out, stopped, signal.SIGTERM, "prune (2/3)", "train", cfg) == continued
    assert "stage fuse" not in out  # no further stage

    done = sweep(continued, env)
    assert done.returncode == 0, done.stderr[-3000:]
    finished = grid(cfg)
    assert finished.select("stream", "step").rows() == [  # the whole grid, every row once
        ("fusion", 0), ("fusion", 1), ("spatial", 0), ("spatial", 1), ("temporal", 0), ("temporal", 1)]

    # damage, each cut short: a train cell's rows and training curve, a pruning step's rows, fused
    # rows; and fused rows whose inputs are gone too: one stream's score file at that step removed,
    # the checkpoint that would make it again cut short (its pruning step reruns, then fuse)
    results, paths = cfg.paths.results, cfg.paths
    damaged = [table_path(results, "accuracy", "temporal/run1/step0"),
               table_path(results, "epochs", "temporal/run1/step0"),
               table_path(results, "accuracy", "spatial/run1/step1"),
               table_path(results, "accuracy", "fusion/run1/step0"),
               table_path(results, "accuracy", "fusion/run1/step1"),
               paths.checkpoint("temporal", 1, 1)]
    for part in damaged:
        cut_short(part)
    paths.scores("temporal", 1, 1, "test").unlink()
    rerun = sweep(continued, env)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    for part in damaged:
        assert f"{part} cannot be read" in rerun.stderr and part.with_name(part.name + ".damaged").is_file()
        assert part.is_file()  # rebuilt
    load_checkpoint(paths.checkpoint("temporal", 1, 1))  # whole again
    assert paths.scores("temporal", 1, 1, "test").is_file()
    assert grid(cfg).equals(finished), (grid(cfg), finished)
    epochs = raw_rows(cfg, "epochs").filter((pl.col("stream") == "temporal") & (pl.col("step") == 0))
    assert sorted(epochs.filter(pl.col("phase") == "train")["epoch"].to_list()) == [1, 2]


@pytest.mark.slow
def test_resume_rebuilds_a_damaged_cell_that_tune_counts_finished(tmp_path, synthetic_shards):
    """A restored Tuner never reruns a trial its state saw finish: the stage refits the cells
    whose rows the store lacks (pipeline.tune.unfinished_cells)."""
    from pipeline.sweep import run_sweep

    cfg = tiny_experiment(tmp_path / "exp", synthetic_shards, stages=["train"])
    run_sweep(cfg)
    before = grid(cfg)
    part = table_path(cfg.paths.results, "accuracy", "spatial/run1/step0")
    cut_short(part)
    run_sweep(cfg, resume=True)
    assert part.is_file() and part.with_name(part.name + ".damaged").is_file()
    assert grid(cfg).equals(before), (grid(cfg), before)
