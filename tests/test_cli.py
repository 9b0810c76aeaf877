"""Entry points: sweep --set/--print-config/--dry-run, console scripts, experiment provenance."""
from __future__ import annotations

import importlib
import json
import os
import re
import tomllib
from pathlib import Path

import pytest
import ray
import yaml

from core.cli import not_shown
from core.commands import SHIMS, entry_points
from core.config import ExperimentConfig, config_hash
from core.overrides import load_config
from pipeline.sweep import main, write_experiment_record

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "ray_configs" / "demo.yaml"


def test_set_overrides_are_typed_and_validated_like_the_yaml():
    cfg = load_config(DEMO, ["train.lr=0.5", "experiment.name=x", "stages=[train, fuse]",
                             "data.classes=[ApplyEyeMakeup]"])
    assert cfg.train.lr == 0.5 and isinstance(cfg.train.lr, float)
    assert cfg.experiment.name == "x" and cfg.stages == ["train", "fuse"]
    assert cfg.data.classes == ["ApplyEyeMakeup"]
    assert cfg.model == load_config(DEMO).model  # untouched sections stay


@pytest.mark.parametrize("override, message", [
    ("train.lrr=0.1", "did you mean 'train.lr'"),
    ("trian.lr=0.1", "did you mean 'train.lr'"),
    ("train.lr=abc", "train.lr: expected float, got 'abc'"),
    ("train.lr", "expected KEY=VALUE"),
])
def test_bad_overrides_exit_2_naming_the_key(override, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--config", str(DEMO), "--set", override, "--dry-run"])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_print_config_round_trips(capsys):
    assert main(["--config", str(DEMO), "--set", "train.epochs=7", "--print-config"]) == 0
    out = capsys.readouterr().out
    printed = ExperimentConfig.from_dict(yaml.safe_load(out))
    assert printed.train.epochs == 7
    assert f"# config_hash: {config_hash(printed)}" in out


def test_dry_run_prints_the_plan_without_ray_or_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "ray"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    root = tmp_path / "exp"
    assert main(["--config", str(DEMO), "--set", f"experiment.root={root}", "--dry-run",
                 "--stages", "data", "train", "fuse"]) == 0
    out = capsys.readouterr().out
    assert "pipeline.tune:run_train_stage" in out and "prune" not in out
    assert "videos: 256 (160 train, 96 test), classes: 8" in out  # the preflight's findings (#25)
    assert "embedded local Ray" in out
    assert not ray.is_initialized()
    assert not root.exists() and not (tmp_path / "ray").exists()


def test_experiment_record_has_provenance(tmp_path, monkeypatch):
    cfg = load_config(DEMO, [f"experiment.root={tmp_path}"])
    record = json.loads(write_experiment_record(cfg, ["train"], False).read_text())
    assert record["config_hash"] == config_hash(cfg) and len(record["config_hash"]) == 16
    assert record["config"]["train"]["lr"] == cfg.train.lr
    assert record["versions"]["torch"] and record["versions"]["ray"] and record["versions"]["python"]
    assert record["versions"]["dali"] and record["versions"]["polars"]
    # the project's own version, as pyproject.toml says and CHANGELOG.md / CITATION.cff name it
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert record["versions"]["crossroads"] == version
    assert f"`{version}`" in (ROOT / "CHANGELOG.md").read_text()
    assert yaml.safe_load((ROOT / "CITATION.cff").read_text())["version"] == version
    assert "gpus" in record["device"] and "gpu_driver" in record["device"]
    assert record["device"]["cpu_model"]  # e.g. "Intel(R) Xeon(R) ..."


def test_git_commit_comes_from_the_env_var_else_the_checkout(monkeypatch):
    import subprocess

    from core import provenance

    monkeypatch.delenv(provenance.GIT_COMMIT_ENV, raising=False)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert provenance.git_commit().startswith(head)
    monkeypatch.setenv(provenance.GIT_COMMIT_ENV, "abc123")  # as `ray job submit` passes it
    assert provenance.git_commit() == "abc123"

    def no_git(*args, **kwargs):
        raise OSError("no git here")
    monkeypatch.setattr(subprocess, "run", no_git)
    assert provenance.git_commit() == "abc123"
    monkeypatch.delenv(provenance.GIT_COMMIT_ENV)
    assert provenance.git_commit() is None


def test_console_scripts_are_declared_and_resolve_to_callables():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"crossroads-sweep", "crossroads-ingest", "crossroads-report", "crossroads-stats"} <= set(scripts)
    for name, target in scripts.items():
        module, _, attr = target.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), name


ENTRY_POINTS = entry_points()  # the same list docs/getting-started.md shows (core.commands)


def test_every_entry_point_is_listed():
    targets = {e.target for e in ENTRY_POINTS}
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts.values()) <= targets  # every console script
    benchmarks = {f"benchmarks.{p.stem}:main" for p in (ROOT / "benchmarks").glob("*.py")
                  if "def main(" in p.read_text()}
    assert benchmarks and benchmarks <= targets  # every benchmark
    assert len(targets) >= 16


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=lambda e: e.module)
def test_help_shows_prog_defaults_and_exit_codes(entry, capsys, monkeypatch):
    import argparse
    parsers = []
    original = argparse.ArgumentParser.parse_args

    def keep_parser(self, *args, **kwargs):
        parsers.append(self)
        return original(self, *args, **kwargs)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", keep_parser)
    with pytest.raises(SystemExit) as exc:
        importlib.import_module(entry.module).main(["--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal width
    parser = parsers[0]
    prog = parser.prog
    assert prog.startswith("crossroads-") or prog == f"python -m {entry.module}", prog
    if entry.script:
        assert prog == entry.script
    assert f"usage: {prog}" in out and "exit codes: 0" in out and "2 bad command line" in out
    # the docs' list reads the same exit codes (without importing the module)
    assert entry.exit_codes and f"exit codes: {entry.exit_codes}" in out
    formatter = parser._get_formatter()
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS or "-h" in action.option_strings:
            continue
        name = action.option_strings[-1]
        assert action.help, f"{entry.module}: {name} does not say what it does"
        shown = formatter._expand_help(action)
        # its default once: never twice, never "(default: None)"
        assert shown.count("(default") <= 1, f"{entry.module}: {name}: {shown!r}"
        assert not re.search(r"\(default: (None|False|\[\]|)\)", shown), f"{entry.module}: {name}: {shown!r}"
        if not not_shown(action.default) and not isinstance(action, argparse._VersionAction):
            assert "default" in shown.lower(), f"{entry.module}: {name} has a default its help does not show"


@pytest.mark.slow  # a fresh interpreter, importing every stage
@pytest.mark.parametrize("shim", sorted(SHIMS))
def test_old_module_paths_still_run(shim, capsys, monkeypatch):
    """``python -m training.sweep`` (the path documented before issue 28's re-layout) runs the
    moved module: the same help as the moved module's own (here, in this process)."""
    import subprocess
    import sys

    monkeypatch.setenv("COLUMNS", "100")  # argparse wraps at the terminal's width: the same for both
    run = subprocess.run([sys.executable, "-m", shim, "--help"], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    with pytest.raises(SystemExit) as done:
        importlib.import_module(SHIMS[shim]).main(["--help"])
    assert done.value.code == 0
    assert run.stdout == capsys.readouterr().out != ""


def test_epoch_metrics_for_tune_come_from_the_loop_history():
    from training.loop import epoch_metrics
    history = [dict(epoch=1, phase="train", loss=2.0, accuracy=10.0, lr=0.1, seconds=3.0),
               dict(epoch=1, phase="val", loss=1.5, accuracy=20.0, lr=0.1, seconds=1.0),
               dict(epoch=2, phase="train", loss=1.0, accuracy=40.0, lr=0.05, seconds=2.5)]
    assert epoch_metrics(history, 1) == {"train_loss": 2.0, "train_acc": 10.0, "train_seconds": 3.0,
                                         "lr": 0.1, "val_loss": 1.5, "val_acc": 20.0, "val_seconds": 1.0}
    assert epoch_metrics(history, 2) == {"train_loss": 1.0, "train_acc": 40.0, "train_seconds": 2.5, "lr": 0.05}
    assert epoch_metrics(history, 2, {"train": 50})["train_samples_per_s"] == 20.0


def test_tune_console_table_shows_the_useful_columns():
    from pipeline.tune import console_reporter
    train, prune = console_reporter("train"), console_reporter("prune")
    assert {"train_loss", "val_acc", "lr", "train_samples_per_s"} <= set(train._metric_columns)
    assert {"step", "channels_removed", "params_removed", "threshold"} <= set(prune._metric_columns)
    assert list(train._parameter_columns) == ["stream", "run"]


def test_report_shows_provenance_collapsed(tmp_path):
    from analysis.report import build_report
    cfg = load_config(DEMO, [f"experiment.root={tmp_path}"])
    write_experiment_record(cfg, ["report"], False)
    report = build_report(tmp_path)
    for text in (report.index.read_text(), report.markdown.read_text()):
        assert config_hash(cfg) in text  # run information table
        details = text[text.index("<details>"):]
        assert all(key in details for key in ("versions", "torch", "gpus", "python"))
