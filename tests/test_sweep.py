"""The sweep entry point: the stage list, CLI errors, and the whole path through a real
Ray head node with `ray job submit` (two GPU trials at once on logical GPUs)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import polars as pl
import pytest
import yaml

from tests.raycluster import BIN, ray_cluster
from tests.sweeps import assert_each_trial_once, tiny_experiment
from pipeline.stages import STAGES, stage_target
from pipeline.sweep import main
from tests.layout import REPO


def test_stages_are_plain_functions_of_cfg_and_ctx():
    """The stage list is plain imports (issue 28): each name maps to its function ``(cfg, ctx)``."""
    import inspect

    from core.config import DEFAULT_STAGES
    assert set(STAGES) == set(DEFAULT_STAGES)
    assert stage_target("explain") == "explanations.stage:run_explain_stage"
    assert stage_target("prune") == "pipeline.prune_stage:run_prune_stage"
    for fn in STAGES.values():
        assert list(inspect.signature(fn).parameters)[:2] == ["cfg", "ctx"]


def test_cli_names_config_errors(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiment: {name: x}\ntrain: {epoch: 3}\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(bad)])
    assert exit_info.value.code == 2
    assert "bad.yaml: train: unknown keys ['epoch']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--config", str(bad), "--stages", "bake"])
    assert "invalid choice: 'bake'" in capsys.readouterr().err


def trial_intervals(storage: Path) -> list[tuple[float, float]]:
    """(start, end) wall times of each Tune trial from its result.json."""
    spans = []
    for result in storage.glob("*/result.json"):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        spans.append((rows[0]["timestamp"] - rows[0]["time_this_iter_s"], rows[-1]["timestamp"]))
    return spans


SUBMITTED_COMMIT = "0123456789abcdef-submitted"  # not a real commit: proves where it came from


@pytest.mark.slow
def test_ray_job_submit_runs_the_sweep_on_a_head_node(tmp_path, synthetic_shards):
    cfg = tiny_experiment(tmp_path / "exp", synthetic_shards, stages=["train", "fuse"])
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    with ray_cluster(head_cpus=2, head_gpus=2) as cluster:
        env, address = cluster.env, cluster.dashboard
        submitted = subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--address", address, "--submission-id", "sweep-test",
             "--working-dir", ".",  # the commit recorded at submit time, as the README shows
             "--runtime-env-json", json.dumps({"env_vars": {"CROSSROADS_GIT_COMMIT": SUBMITTED_COMMIT}}),
             "--", "python", "-m", "pipeline.sweep", "--config", str(config)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=480)
        status = subprocess.run([str(BIN / "ray"), "job", "status", "--address", address, "sweep-test"],
                                env=env, capture_output=True, text=True)
        # without the token the job API refuses
        refused = subprocess.run([str(BIN / "ray"), "job", "list", "--address", address],
                                 env={**env, "RAY_AUTH_TOKEN": "wrong"}, capture_output=True, text=True)
    logs = submitted.stdout[-4000:] + submitted.stderr[-2000:]
    assert "job 'sweep-test' succeeded" in (status.stdout + status.stderr).lower(), logs
    assert refused.returncode != 0
    spans = trial_intervals(cfg.paths.ray / "train")
    assert len(spans) == 2
    assert len(list((cfg.paths.ray / "train").glob("*/events.out.tfevents.*"))) == 2  # TensorBoard, per trial
    assert max(s for s, _ in spans) < min(e for _, e in spans), f"trials did not overlap: {spans}"
    assert_each_trial_once(cfg)
    record = json.loads((cfg.paths.root / "experiment.json").read_text())
    assert record["config"]["train"]["runs"] == 1 and record["started_at"]
    assert record["git_commit"] == SUBMITTED_COMMIT  # no .git needed in the job's working dir
    assert "video accuracy (%), mean" in logs and "findings" in logs  # the closing summary
    fused = pl.read_parquet(cfg.paths.results / "accuracy" / "fusion" / "run1" / "step0.parquet")
    assert fused.height == 1 and fused["git_commit"].to_list() == [SUBMITTED_COMMIT]
    trained = pl.read_parquet(cfg.paths.results / "accuracy" / "spatial" / "run1" / "step0.parquet")
    assert trained["git_commit"].to_list() == [SUBMITTED_COMMIT]  # written inside a Tune trial


def test_a_root_recorded_before_a_setting_existed_is_not_refused_for_it(tmp_path):
    """An upgrade adds a setting (with the default that keeps the old behaviour): the root's
    recorded config lacks it and its hash differs, yet it is the same experiment. Setting the
    new key to something else is a change like any other."""
    from core.config import ExperimentConfig
    from pipeline.sweep import CONFIG_RECORD, ConfigChanged, check_config

    root = tmp_path / "exp"
    data = {"experiment": {"name": "x", "root": str(root)}, "train": {"runs": 1}, "stages": ["train"]}
    check_config(ExperimentConfig.from_dict(data))
    record = json.loads((root / CONFIG_RECORD).read_text())
    del record["config"]["train"]["warmup_epochs"]  # as written by a version without the setting
    record["config_hash"] = "0123456789abcdef"
    (root / CONFIG_RECORD).write_text(json.dumps(record))
    with pytest.raises(ConfigChanged, match=r"train.warmup_epochs: was 0, now 2"):
        check_config(ExperimentConfig.from_dict({**data, "train": {"runs": 1, "warmup_epochs": 2}}))
    check_config(ExperimentConfig.from_dict(data))  # the default: the same experiment
    assert json.loads((root / CONFIG_RECORD).read_text())["config"]["train"]["warmup_epochs"] == 0


def test_root_refuses_another_config_but_allows_more_runs_or_stages(tmp_path, capsys):
    from core.lock import LOCK_NAME
    from core.config import ExperimentConfig
    from pipeline.sweep import ConfigChanged, check_config

    root = tmp_path / "exp"
    first = {"experiment": {"name": "x", "root": str(root)}, "train": {"runs": 1, "lr": 0.01},
             "stages": ["train"]}
    check_config(ExperimentConfig.from_dict(first))  # a new root remembers its config
    more = {**first, "train": {"runs": 2, "lr": 0.01}, "stages": ["train", "fuse"]}
    check_config(ExperimentConfig.from_dict(more))  # only adds runs and stages: allowed
    changed = {**more, "train": {"runs": 2, "lr": 0.02}}
    with pytest.raises(ConfigChanged, match=r"changed:\n  train.lr: was 0.01, now 0.02\n"):
        check_config(ExperimentConfig.from_dict(changed))
    config = tmp_path / "changed.yaml"
    config.write_text(yaml.safe_dump(changed))
    assert main(["--config", str(config)]) == 2  # before Ray starts, no traceback
    err = capsys.readouterr().err
    assert "train.lr: was 0.01, now 0.02" in err and "Traceback" not in err
    # a live run holds the root: a second sweep exits 2 naming it
    (root / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                               "started": 0, "what": "sweep"}))
    config.write_text(yaml.safe_dump(more))
    assert main(["--config", str(config)]) == 2
    assert f"in use by sweep pid {os.getpid()}" in capsys.readouterr().err
