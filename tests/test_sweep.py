"""The sweep entry point: the stage list, CLI errors, recorded configs, the lock (a sweep
submitted with `ray job submit` to a real multi-node cluster: tests/test_cluster.py)."""
from __future__ import annotations

import json
import os
import socket

import pytest
import yaml

from pipeline.stages import STAGES, stage_target
from pipeline.sweep import main


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
