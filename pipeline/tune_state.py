"""Who owns a Tune experiment's state, so that ``--resume`` restores only its own root's.

``Tuner.restore`` unpickles Tune's state (``tuner.pkl``, trial states): resuming state that
someone else wrote runs their code. A new Tuner records the experiment root that made it in
``<storage>/<name>/crossroads_root.json``; ``--resume`` restores only state whose record names
this root. Light imports only (the sweep checks before Ray starts).
"""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.fs as pafs
from ray import tune

from core.config import ConfigError, ExperimentConfig


def storage_uri(cfg: ExperimentConfig) -> str:
    """Where Tune keeps experiment state and trial checkpoints: ``ray.storage_path`` as given
    when it is a URI (``s3://…``, ``gs://…``, ``file://…``: any pyarrow filesystem), else that
    folder (default ``<root>/ray``) as an absolute path."""
    given = cfg.ray.storage_path
    if given and "://" in given:
        return given.rstrip("/")
    return str(Path(given or cfg.paths.ray).resolve())


OWNER_FILE = "crossroads_root.json"  # beside Tune's state: the experiment root that wrote it


class ResumeRefused(ConfigError):
    """``--resume`` found Tune state that this experiment root did not write (names both)."""


def _owner_file(cfg: ExperimentConfig, name: str) -> tuple[pafs.FileSystem, str]:
    fs, path = pafs.FileSystem.from_uri(storage_uri(cfg))
    return fs, f"{path}/{name}/{OWNER_FILE}"


def claim_tune_state(cfg: ExperimentConfig, name: str) -> None:
    """Record this experiment root as the owner of the Tune experiment ``name`` (new Tuners)."""
    fs, path = _owner_file(cfg, name)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as out:
        out.write(json.dumps({"root": str(cfg.paths.root.resolve())}).encode())


def tune_state_owner(cfg: ExperimentConfig, name: str) -> str | None:
    """The experiment root recorded beside the Tune experiment ``name``'s state, if any."""
    fs, path = _owner_file(cfg, name)
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return json.loads(f.read().decode()).get("root")


def check_resume_root(cfg: ExperimentConfig, name: str) -> bool:
    """Whether ``--resume`` may restore the Tune experiment ``name``: True when its state exists
    and was written by this experiment root, False when there is none (a new Tuner starts).

    Restoring unpickles Tune's state (``tuner.pkl``, trial state), which can run any code:
    state in this root's storage path written by another root (a shared or copied
    ``ray.storage_path``), or by no crossroads sweep at all, is refused, naming both paths.
    """
    path = f"{storage_uri(cfg)}/{name}"
    if not tune.Tuner.can_restore(path):
        return False
    owner, root = tune_state_owner(cfg, name), str(cfg.paths.root.resolve())
    if owner != root:
        raise ResumeRefused(
            f"--resume: the Tune state {path} was written by "
            + (f"the experiment root {owner}" if owner else f"an unknown run (no {OWNER_FILE})")
            + f", not by this root {root}; Tune pickles its state, so only resume what this root "
              f"wrote. Rerun without --resume (finished work is skipped) or use that root.")
    return True
