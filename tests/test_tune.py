"""Ray Tune on real local Ray and real shards: a run trains the same way every time; a trial
that crashes mid-training is retried and resumes from its last checkpoint; a killed experiment
rerun with --resume does not retrain finished trials; the results tables hold each (stream,
run) exactly once."""
from __future__ import annotations

import subprocess
import sys
import time

import polars as pl
import pytest
import yaml
from ray import tune

from core.config import ExperimentConfig
from training.fusion import run_fusion_stage
from tests.processes import kill_session
from tests.sweeps import assert_each_trial_once, local_ray, raw_rows, tiny_experiment
from pipeline.tune import make_tuner, run_trial
from tests.layout import REPO


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
    with local_ray():
        assert all(r.error is None for r in make_tuner(straight).fit())
        results = make_tuner(crashed, trainable=crash_once_after_epoch_1).fit()
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
    with local_ray():
        rerun = make_tuner(crashed, name="train-rerun").fit()
    assert all(r.metrics.get("skipped") for r in rerun)
    run_fusion_stage(crashed, None)
    assert {p: p.stat().st_mtime_ns for p in crashed.paths.results.rglob("*.parquet")} == written


@pytest.mark.slow
def test_killed_sweep_resumes_without_retraining_finished_trials(tmp_path, synthetic_shards):
    # one trial at a time (2 CPUs each), so the kill finds one finished and one not started
    cfg = tiny_experiment(tmp_path / "exp", synthetic_shards, stages=["train"], ray={"cpus_per_trial": 2})
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    command = [sys.executable, "-m", "pipeline.sweep", "--config", str(config)]
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
