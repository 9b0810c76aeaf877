"""Scratch folders of a running process, and the ones a killed process left behind.

A loader that reads a subset of the stored clips writes DALI indexes listing only those (see
``shards.dali``) into a temporary folder, removed when the loader goes. A process killed with
SIGKILL (a Ray node lost, an out-of-memory kill) never removes it, so each folder's name carries
its process id and a new folder first removes those whose process is no longer running here.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from core.node import process_running

PREFIX = "crossroads-epoch-idx-"


def owner(folder: Path) -> int | None:
    """The process id in a scratch folder's name (``<PREFIX><pid>-<random>``), if it has one."""
    pid = folder.name[len(PREFIX):].split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def remove_orphans(where: Path | None = None) -> list[Path]:
    """Remove the scratch folders in ``where`` (the temp folder) whose process is gone; returns them.
    Folders of the old unnamed form (no process id) are left alone: whose they are is unknown."""
    where = Path(where or tempfile.gettempdir())
    removed = []
    for folder in where.glob(PREFIX + "*"):
        pid = owner(folder)
        if pid is not None and not process_running(pid):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def new_folder() -> Path:
    """A new scratch folder of this process, after removing those that killed processes left."""
    remove_orphans()
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
