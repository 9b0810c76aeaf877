"""A real multi-node Ray cluster on this machine (a head node and two worker nodes started
with `ray start`, each with its own CPUs, logical GPU, temp dir and ports), the sweep
submitted with `ray job submit`, the experiment root on one folder every node uses: ingest
tasks and trials run on several nodes, and every row says where it ran and which
commit the job was submitted from; the job API refuses a client without the cluster's token."""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import yaml

from core.results import read_table
from tests.raycluster import ray_cluster
from core.config import ExperimentConfig
from tests.layout import REPO

STEPS = 1
SUBMITTED_COMMIT = "0123456789abcdef-submitted"  # not a real commit: proves where it came from


def cluster_experiment(root: Path) -> ExperimentConfig:
    """Tiny synthetic data made by the data stage, both streams trained and pruned one step.
    One logical GPU per trial and one per worker node: the two trials of a stage run on the
    two worker nodes, never on the GPU-less head, which runs the driver and ingest tasks."""
    return ExperimentConfig.from_dict({
        "experiment": {"name": "cluster", "root": str(root), "seed": 0},
        "data": {"synthetic": {"classes": 8, "groups": 3, "clips": 2, "frames": 16, "width": 128,
                               "height": 96},
                 "split": 1, "clips_per_video": 2, "test_clips": 2, "short_side": 64, "workers": 3},
        "model": {"arch": "resnet18", "input_size": 32},
        "train": {"runs": 1, "epochs": 1, "batch_size": 16, "optimizer": "adamw", "lr": 0.002,
                  "val_fraction": 0.0, "channels_last": False},
        "eval": {"batch_size": 32},
        "loader": {"threads": 1, "device": "cpu"},
        "fusion": {"methods": ["mean"]},
        "prune": {"steps": STEPS, "step_fraction": 0.2, "finetune_epochs": 1, "round_to": 8},
        "ray": {"gpus_per_trial": 1, "cpus_per_trial": 1, "max_failures": 2},
        "stages": ["data", "train", "prune", "fuse"],
    })


def submit(cluster, config: Path, submission_id: str, timeout: float = 600, succeed: bool = True,
           env_vars: dict | None = None) -> str:
    """`ray job submit` from the repository (``env_vars``: the job's runtime environment);
    returns the job's output, asserting it succeeded (or failed, with ``succeed=False``)."""
    runtime = ["--runtime-env-json", json.dumps({"env_vars": env_vars})] if env_vars else []
    submitted = cluster.ray("job", "submit", "--address", cluster.dashboard, "--submission-id", submission_id,
                            "--working-dir", ".",  # the commit recorded at submit time, as the README shows
                            *runtime, "--", "python", "-m", "pipeline.sweep", "--config",
                            str(config), cwd=REPO, timeout=timeout)
    status = cluster.ray("job", "status", "--address", cluster.dashboard, submission_id)
    logs = submitted.stdout[-6000:] + submitted.stderr[-3000:]
    assert ("succeeded" if succeed else "failed") in (status.stdout + status.stderr).lower(), logs
    assert "FATAL" not in logs, logs
    return logs


@pytest.mark.slow
def test_nodes_sharing_a_temp_dir_are_refused_before_work_starts(tmp_path):
    """Plain `ray start` commands on one host share /tmp/ray, and with it the job's unpacked
    working_dir, which a node's first task setup deletes under the driver: the demo failed
    after its data stage with oneMKL "Cannot load libtorch_cpu.so". Now a clear error first."""
    cfg = cluster_experiment(tmp_path / "shared_root")
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    with ray_cluster(head_cpus=1, workers=[{"cpus": 1}], share_temp_dir=True) as cluster:
        logs = submit(cluster, config, "shared-temp", succeed=False)
    assert "share the temp dir" in logs and "ray start --temp-dir" in logs, logs
    assert "exit code 2" in logs, logs
    assert not cfg.paths.shards.exists()  # refused before the data stage


@pytest.mark.slow
def test_sweep_runs_across_the_nodes_of_a_multi_node_cluster(tmp_path):
    cfg = cluster_experiment(tmp_path / "shared_root")
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    with ray_cluster(head_cpus=1, workers=[{"cpus": 1, "gpus": 1}, {"cpus": 1, "gpus": 1}]) as cluster:
        logs = submit(cluster, config, "multinode", env_vars={"CROSSROADS_GIT_COMMIT": SUBMITTED_COMMIT})
        # without the cluster's token the job API refuses
        refused = cluster.ray("job", "list", "--address", cluster.dashboard, env={"RAY_AUTH_TOKEN": "wrong"})
    assert refused.returncode != 0
    assert "video accuracy (%), mean" in logs and "findings" in logs  # the closing summary
    root = cfg.paths.root
    record = json.loads((root / "experiment.json").read_text())
    assert record["config"]["train"]["runs"] == 1 and record["started_at"]
    assert record["git_commit"] == SUBMITTED_COMMIT  # no .git needed in the job's working dir
    manifest = pl.read_parquet(cfg.paths.shards / "manifest.parquet")
    assert manifest["status"].unique().to_list() == ["ok"]
    assert manifest["node_id"].n_unique() >= 2, "ingest tasks ran on one node only"
    accuracy = read_table(cfg.paths.results, "accuracy")
    trials = accuracy.filter(pl.col("stream") != "fusion")
    # every (stream, run, step) exactly once, written by the trial where it ran
    assert sorted(trials.select("stream", "step").rows()) == \
        [(s, k) for s in ("spatial", "temporal") for k in range(STEPS + 1)]
    assert trials["node_id"].null_count() == 0 and trials["host"].null_count() == 0
    assert set(accuracy["git_commit"]) == {SUBMITTED_COMMIT}  # also the rows written inside Tune trials
    # one GPU a trial, none on the head: the trials ran on the worker nodes, and on both of them.
    # Not both within each stage: a stage's second trial may wait for its node's first worker
    # process to start (seconds on a loaded 2-core machine) until the first trial has finished,
    # and Tune then reuses that trial's actor (reuse_actors). Trials at once: test_ray_resources.
    assert trials["node_id"].n_unique() == 2, "every trial ran on one node"
    assert accuracy.filter(pl.col("stream") == "fusion").height == STEPS + 1
    # every result in the shared root: checkpoints, scores, tables and Tune's trial state
    for stream in ("spatial", "temporal"):
        for step in range(STEPS + 1):
            assert cfg.paths.checkpoint(stream, 1, step).is_file()
            assert cfg.paths.scores(stream, 1, step, "test").is_file()
    assert (root / "ray" / "train").is_dir() and (root / "ray" / "prune").is_dir()
    assert len(list((root / "ray" / "train").glob("*/events.out.tfevents.*"))) == 2  # TensorBoard, per trial

