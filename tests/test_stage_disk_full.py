"""A sweep stage that fails on a full disk (issue 31): a real small tmpfs, real ENOSPC.

The message names the folder, its free space and what the cost plan expects the stage to
write (``pipeline.cost_plan.stage_disk_need``); the sweep exits 1, with no traceback and no
lock left behind.
"""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from core.diskspace import size_text
from core.lock import LOCK_NAME
from tests.tmpfs import fill, small_tmpfs
from tests.sweeps import tiny_experiment
from core.config import ExperimentConfig

REPO = Path(__file__).resolve().parents[1]


def resnet18_checkpoint_bytes() -> int:
    """4 bytes a float32 parameter of a resnet18 with 101 outputs, counted on a real model."""
    from torchvision import models
    return 4 * sum(p.numel() for p in models.resnet18(num_classes=101).parameters())


def enospc_in(folder: Path) -> OSError:
    """The real error of a write into a full filesystem, wrapped as a failed stage wraps it."""
    try:
        (folder / "step0.pt").write_bytes(b"\0" * 65536)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
        try:
            raise RuntimeError("1 training trial(s) failed") from exc
        except RuntimeError as wrapped:
            return wrapped
    raise AssertionError(f"{folder} is not full")


@pytest.mark.parametrize("stage, models", [("train", 1), ("prune", 3), ("fuse", None)])
def test_a_stage_on_a_full_disk_names_folder_free_space_and_the_plans_need(tmp_path, stage, models):
    from pipeline.sweep import stage_disk_full

    with small_tmpfs(tmp_path / "fs", "256k") as fs:
        cfg = ExperimentConfig.from_dict({
            "experiment": {"name": "full", "root": str(fs / "exp")}, "model": {"arch": "resnet18"},
            "train": {"runs": 2}, "prune": {"steps": 3},
            "data": {"synthetic": {"classes": 2, "groups": 3, "clips": 2, "width": 64, "height": 48}}})
        fill(fs)
        message = str(stage_disk_full(cfg, stage, f"stage {stage} (2/3)", enospc_in(fs)))
    # a failed write() names no file (nor does Tune's summary of a failed trial): the root is named
    assert message.startswith(f"disk full: {cfg.paths.root} has 0 B free, stage {stage} (2/3) needs about ")
    assert "run the same command again" in message
    if models is not None:  # 2 streams x 2 runs x (1 trained | 3 pruned steps)
        assert f"needs about {size_text(resnet18_checkpoint_bytes() * 4 * models)} (cost plan: its " \
               f"{4 * models} {'pruned ' if stage == 'prune' else ''}checkpoints)" in message, message
    else:  # not estimated: the whole sweep's shards and checkpoints, said so
        from pipeline.cost_plan import disk_estimate
        total = disk_estimate(cfg)["total_bytes"]
        assert total > resnet18_checkpoint_bytes() * 16  # 4 trained + 12 pruned models, and the shards
        assert f"needs about {size_text(total)} (cost plan: the whole sweep's shards and checkpoints; " \
               f"stage fuse's own files are not estimated)" in message, message


@pytest.mark.slow
def test_a_sweep_whose_train_stage_fills_its_disk_exits_1_saying_what_it_needs(tmp_path, synthetic_shards):
    """A real sweep on a 4 MiB tmpfs: its config, lock and Tune state fit, a checkpoint does not."""
    with small_tmpfs(tmp_path / "fs", "4m") as fs:
        cfg = tiny_experiment(fs / "exp", synthetic_shards, stages=["train"], ray={"max_failures": 0})
        config = tmp_path / "full.yaml"
        config.write_text(yaml.safe_dump(cfg.to_dict()))
        done = subprocess.run([sys.executable, "-m", "pipeline.sweep", "--config", str(config)], cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                              timeout=600)
        errors = [line for line in done.stderr.splitlines() if line.startswith("error: disk full: ")]
        assert done.returncode == 1 and len(errors) == 1, (done.returncode, done.stderr[-3000:])
        assert errors[0].startswith(f"error: disk full: {cfg.paths.root}") and " free, stage train (1/1) needs " \
            f"about {size_text(resnet18_checkpoint_bytes() * 2)} (cost plan: its 2 checkpoints)" in errors[0]
        assert "Traceback" not in done.stderr.split(errors[0])[1]  # the last word is the one line
        assert not (cfg.paths.root / LOCK_NAME).exists()


def test_another_error_counts_as_a_full_disk_only_where_the_disk_is_nearly_full(tmp_path):
    """Tune, which could not write a failed trial's error file on a full disk, fails reading it
    back (EOFError): on a full disk that is named as such, saying what failed; elsewhere not."""
    from pipeline.sweep import stage_disk_full

    def config(root):
        return ExperimentConfig.from_dict({"experiment": {"name": "full", "root": str(root)},
                                           "model": {"arch": "resnet18"}})

    error = EOFError("Ran out of input")
    with small_tmpfs(tmp_path / "fs", "256k") as fs:
        fill(fs)
        cfg = config(fs / "exp")
        message = str(stage_disk_full(cfg, "train", "stage train (1/1)", error))
    assert message.startswith(f"disk full: {cfg.paths.root} has 0 B free, stage train (1/1) needs about ")
    assert "(the stage failed with EOFError: Ran out of input, after its writes ran out of space)" in message
    # the same error where there is room (this test's own disk, far from full): not a full disk
    assert stage_disk_full(config(tmp_path / "exp"), "train", "stage train (1/1)", error) is None
