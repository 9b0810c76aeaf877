"""Ray Tune on real local Ray and real shards: a run trains the same way every time; a trial
that crashes mid-training is retried and resumes from its last checkpoint; a killed experiment
rerun with --resume does not retrain finished trials; the results tables hold each (stream,
run) exactly once."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import ray
import yaml
from ray import tune

from analysis.results import table_files
from training.config import ExperimentConfig
from training.fusion import run_fusion_stage
from training.tune import make_tuner, run_trial

from tests.processes import kill_session, session_pids  # noqa: F401 (other test modules import them from here)

REPO = Path(__file__).resolve().parents[1]


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


def crash_once_after_epoch_1(params, experiment, resume=False):
    """train_trial, except that its first attempt dies right after checkpointing epoch 1."""
    first_attempt = tune.get_checkpoint() is None

    def crash(state):
        if first_attempt and state.epoch == 1:
            raise RuntimeError("injected failure after epoch 1")

    cfg = ExperimentConfig.from_dict(experiment)
    tune.report(run_trial(cfg, params["stream"], params["run"], after_checkpoint=crash))


@pytest.mark.slow
def test_crashed_trial_resumes_from_its_checkpoint_to_the_uninterrupted_result(tmp_path, synthetic_shards,
                                                                               monkeypatch):
    """Two runs of one config and seed: one uninterrupted, one whose trials crash right after
    checkpointing epoch 1 and are retried from that checkpoint. Every row is equal: a run
    trains the same way every time (the model is built after seeding), and a resumed one
    reads and computes what the uninterrupted one did (each epoch depends on seed and epoch)."""
    straight, crashed = (tiny_experiment(tmp_path / name, synthetic_shards, epochs=2) for name in ("a", "b"))
    # Ray workers import this module (by the name pytest gave it) to run its trainable
    here = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        assert all(r.error is None for r in make_tuner(straight).fit())
        results = make_tuner(crashed, trainable=crash_once_after_epoch_1).fit()
    finally:
        ray.shutdown()
    assert len(results) == 2
    for result in results:
        assert result.error is None
        # the retry restored epoch 1's checkpoint and trained only epoch 2
        assert result.metrics["resumed_from"] == 1 and result.metrics["epoch"] == 2
    for cfg in (straight, crashed):
        assert_each_trial_once(cfg)
    a, b = (raw_rows(cfg, "accuracy").sort("stream").select("stream", "seed", "loss", "clip_accuracy",
                                                             "video_accuracy") for cfg in (straight, crashed))
    assert a.height == 2 and a.equals(b), (a, b)
    a, b = (raw_rows(cfg, "epochs").sort("stream", "epoch", "phase").select("stream", "epoch", "phase", "loss",
                                                                            "accuracy") for cfg in (straight, crashed))
    assert a.equals(b), (a, b)
    run_fusion_stage(crashed, None)
    assert raw_rows(crashed, "accuracy").filter(pl.col("stream") == "fusion").height == 1
    # a plain rerun (no --resume) trains and fuses nothing again
    written = {p: p.stat().st_mtime_ns for p in crashed.paths.results.rglob("*.parquet")}
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        rerun = make_tuner(crashed, name="train-rerun").fit()
    finally:
        ray.shutdown()
    assert all(r.metrics.get("skipped") for r in rerun)
    run_fusion_stage(crashed, None)
    assert {p: p.stat().st_mtime_ns for p in crashed.paths.results.rglob("*.parquet")} == written


@pytest.mark.slow
def test_killed_sweep_resumes_without_retraining_finished_trials(tmp_path, synthetic_shards):
    # one trial at a time (2 CPUs each), so the kill finds one finished and one not started
    cfg = tiny_experiment(tmp_path / "exp", synthetic_shards, stages=["train"], ray={"cpus_per_trial": 2})
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    command = [sys.executable, "-m", "training.sweep", "--config", str(config)]
    log = open(tmp_path / "first.log", "w")
    sweep = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    accuracy = cfg.paths.results / "accuracy"
    try:
        deadline = time.time() + 400
        while not list(accuracy.rglob("*.parquet")) and sweep.poll() is None and time.time() < deadline:
            time.sleep(1)
        finished = sorted(accuracy.rglob("*.parquet"))
        assert finished and sweep.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    finally:  # kill the driver and everything it started (its local Ray included), by pid
        kill_session(sweep.pid)
        sweep.wait()
        log.close()
    stamps = {f: f.stat().st_mtime_ns for f in finished}
    assert len(stamps) == 1, "every trial finished before the kill: nothing left to resume"

    rerun = subprocess.run(command + ["--resume"], cwd=REPO, capture_output=True, text=True, timeout=500)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    for f, stamp in stamps.items():
        assert f.stat().st_mtime_ns == stamp, f"{f} was rewritten: a finished trial was trained again"
    assert_each_trial_once(cfg)
    assert "video accuracy (%), mean" in rerun.stdout  # the closing summary
