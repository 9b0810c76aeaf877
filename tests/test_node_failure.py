"""Node failures on a real multi-node Ray cluster on this machine (a head and two worker nodes
started with `ray start`, the sweep submitted with `ray job submit`, one shared root):

- a worker node killed (`kill -9` of its raylet and every worker it started) while trials run
  on it, once during training and once during pruning: the job still succeeds, Tune retries
  the lost trial from its last checkpoint on a remaining or replacement node, the results hold
  every (stream, run, step) row exactly once and equal an uninterrupted run's;
- the job's driver killed: the same job submitted again with `--resume` ends with the same rows.

Small on purpose (1 run, 2 epochs, 2 pruning steps, 32 px ResNet-18 over the session's
synthetic shards): the test is bounded by Ray's start-up and node-death detection (Ray's
health check, 3 s x 5 by default; shorter settings declared live nodes dead on a loaded
machine), not by training.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from tests.raycluster import Cluster, Node, ray_cluster
from tests.processes import session_pids
from tests.sweeps import raw_rows, tiny_experiment
from core.config import ExperimentConfig
from tests.layout import REPO

STEPS = 2
GPU_WORKER = {"cpus": 1, "gpus": 1}


def experiment(root: Path, shards: Path, **sections) -> ExperimentConfig:
    """Both streams, one run each, trained 2 epochs and pruned 2 steps. One logical GPU per
    trial, one per worker node: the head runs only the driver, each worker one trial."""
    return tiny_experiment(root, shards, epochs=2, **{
        # 4 fine-tuning epochs a step: the chain must still be running when the test, having
        # seen step 1's checkpoint, kills its node (with reused trial actors one epoch took < 1 s)
        "prune": {"steps": STEPS, "step_fraction": 0.2, "finetune_epochs": 4, "round_to": 8},
        "ray": {"gpus_per_trial": 1, "cpus_per_trial": 1, "max_failures": 3},
        "stages": ["train", "prune", "fuse"], **sections})


def write_config(cfg: ExperimentConfig, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return path


def submit(cluster: Cluster, config: Path, submission_id: str, *extra: str) -> None:
    """`ray job submit --no-wait` of the sweep from this checkout."""
    done = cluster.ray("job", "submit", "--address", cluster.dashboard, "--submission-id", submission_id,
                       "--no-wait", "--working-dir", ".", "--", "python", "-m", "pipeline.sweep",
                       "--config", str(config), *extra, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def job_status(cluster: Cluster, submission_id: str) -> str:
    out = cluster.ray("job", "status", "--address", cluster.dashboard, submission_id)
    text = (out.stdout + out.stderr).lower()
    for status in ("succeeded", "failed", "stopped", "running", "pending"):
        if status in text:
            return status.upper()
    return "UNKNOWN"


def job_logs(cluster: Cluster, submission_id: str) -> str:
    out = cluster.ray("job", "logs", "--address", cluster.dashboard, submission_id)
    return out.stdout[-8000:] + out.stderr[-2000:]


def wait_for_job(cluster: Cluster, submission_id: str, timeout: float = 420) -> str:
    deadline = time.time() + timeout
    while (status := job_status(cluster, submission_id)) in ("RUNNING", "PENDING", "UNKNOWN"):
        assert time.time() < deadline, f"{submission_id} still {status}\n" + job_logs(cluster, submission_id)
        time.sleep(2)
    return status


def wait_until(condition, what: str, cluster: Cluster, submission_id: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not condition():
        status = job_status(cluster, submission_id) if int(time.time()) % 5 == 0 else "RUNNING"
        assert status in ("RUNNING", "PENDING", "UNKNOWN") and time.time() < deadline, \
            f"gave up waiting for {what} (job {status})\n" + job_logs(cluster, submission_id)
        time.sleep(0.25)


def checkpointed_trials(cfg: ExperimentConfig, stage: str) -> int:
    """Trials of a Tune stage with at least one checkpoint in the shared storage."""
    return len({p.parent for p in (cfg.paths.ray / stage).glob("*/checkpoint_*")})


def trial_processes(node: Node) -> list[str]:
    """Command lines of the Tune trial actors running on ``node`` (by its process session)."""
    found = []
    for pid in session_pids(node.process.pid):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "ImplicitFunc" in command:
            found.append(command)
    return found


def driver_processes(config: Path) -> list[int]:
    """The job's entrypoint (shell and python) by its unique config path."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            command = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "pipeline.sweep" in command and str(config) in command:
            pids.append(int(cmdline.parent.name))
    return pids


def running_checkpointed_trial(cfg: ExperimentConfig, stage: str) -> int | None:
    """The pid of a trial of ``stage`` that has reported a checkpoint and is not done (from
    Tune's result.json in the shared storage), else None."""
    for results in (cfg.paths.ray / stage).glob("*/result.json"):
        rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
        if rows and list(results.parent.glob("checkpoint_*")) and not any(r.get("done") for r in rows):
            return rows[-1]["pid"]
    return None


def kill_node_of(cluster: Cluster, pid: int) -> Node:
    """kill -9 the worker node running process ``pid``, then start a replacement node (as an
    autoscaler would), so the retried trial finds a GPU whichever node it needs."""
    victim = next(n for n in cluster.nodes[1:] if not n.killed and pid in session_pids(n.process.pid))
    assert trial_processes(victim), "the trial's node runs no trial"
    victim.kill()
    cluster.start_node(**GPU_WORKER)
    return victim


def tune_results(cfg: ExperimentConfig, stage: str) -> list[dict]:
    """Every result Tune recorded for every trial of a stage (each trial's result.json)."""
    rows = []
    for path in (cfg.paths.ray / stage).glob("*/result.json"):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows


def model_rows(cfg: ExperimentConfig) -> pl.DataFrame:
    """The `accuracy` rows as numbers a rerun must reproduce, every row of every file."""
    return (raw_rows(cfg, "accuracy")
            .select("stream", "fusion", "run", "step", "seed", "prune_ratio", "channels_removed",
                    "loss", "clip_accuracy", "video_accuracy")
            .sort("stream", "fusion", "step", nulls_last=False))


def assert_every_row_once(cfg: ExperimentConfig) -> None:
    rows = raw_rows(cfg, "accuracy")
    trials = rows.filter(pl.col("stream") != "fusion")
    assert sorted(trials.select("stream", "run", "step").rows()) == \
        [(s, 1, k) for s in ("spatial", "temporal") for k in range(STEPS + 1)]
    assert sorted(rows.filter(pl.col("stream") == "fusion")["step"].to_list()) == list(range(STEPS + 1))
    epochs = raw_rows(cfg, "epochs")
    assert epochs.select("stream", "run", "step", "epoch", "phase").is_duplicated().sum() == 0


@pytest.mark.slow
def test_killed_worker_nodes_and_driver_are_survived_with_the_uninterrupted_rows(tmp_path, synthetic_shards):
    straight = experiment(tmp_path / "straight", synthetic_shards)
    failing = experiment(tmp_path / "failing", synthetic_shards)
    resumed = experiment(tmp_path / "resumed", synthetic_shards, stages=["train"])
    with ray_cluster(head_cpus=1, workers=[GPU_WORKER, GPU_WORKER]) as cluster:
        t0 = time.time()
        submit(cluster, write_config(straight, tmp_path / "straight.yaml"), "straight")
        assert wait_for_job(cluster, "straight") == "SUCCEEDED", job_logs(cluster, "straight")
        uninterrupted_s = time.time() - t0

        # 1. a node dies during training, running a trial that checkpointed epoch 1
        submit(cluster, write_config(failing, tmp_path / "failing.yaml"), "failing")
        found = {}
        wait_until(lambda: found.setdefault("pid", running_checkpointed_trial(failing, "train"))
                   or found.pop("pid"), "a train trial past epoch 1", cluster, "failing")
        kill_node_of(cluster, found["pid"])
        # 2. another dies during pruning, running a chain that reported step 1
        found = {}
        wait_until(lambda: found.setdefault("pid", running_checkpointed_trial(failing, "prune"))
                   or found.pop("pid"), "a pruning chain past step 1", cluster, "failing")
        kill_node_of(cluster, found["pid"])
        assert wait_for_job(cluster, "failing") == "SUCCEEDED", job_logs(cluster, "failing")

        # 3. the driver (the job's entrypoint) is killed mid-training, the job resubmitted with --resume
        config = write_config(resumed, tmp_path / "resumed.yaml")
        submit(cluster, config, "killed")
        wait_until(lambda: checkpointed_trials(resumed, "train") >= 1, "a train checkpoint", cluster, "killed")
        drivers = driver_processes(config)  # Ray starts a job's driver in a session of its own
        assert drivers, "no driver process found"
        for pid in drivers:
            os.kill(pid, signal.SIGKILL)
        assert wait_for_job(cluster, "killed") == "FAILED"
        submit(cluster, config, "resumed", "--resume")
        assert wait_for_job(cluster, "resumed") == "SUCCEEDED", job_logs(cluster, "resumed")
    print(f"uninterrupted sweep: {uninterrupted_s:.0f} s")

    # Tune retried the lost trials from their last checkpoint: epoch 1, pruning step 1
    train = tune_results(failing, "train")
    assert any(r.get("resumed_from") == 1 for r in train), train
    prune = tune_results(failing, "prune")
    assert any((r.get("started_at_step") or 1) > 1 for r in prune), [
        {k: r.get(k) for k in ("trial_id", "pid", "step", "epoch", "started_at_step", "done", "skipped")} for r in prune]
    for cfg in (straight, failing):
        assert_every_row_once(cfg)
    assert model_rows(failing).equals(model_rows(straight)), (model_rows(failing), model_rows(straight))
    # the resumed job trained each (stream, run) once, to the uninterrupted numbers
    trained = model_rows(resumed)
    assert trained.height == 2
    assert trained.equals(model_rows(straight).filter(pl.col("step") == 0, pl.col("stream") != "fusion"))
