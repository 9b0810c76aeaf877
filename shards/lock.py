"""An exclusive lock on one output folder (an ingest ``--out`` or an experiment root).

It lives in ``shards`` because both ``ingest`` and ``training`` may import ``shards`` and
``shards`` imports nothing of ours (ARCHITECTURE.md: arrows point one way).

The lock is a file created with ``O_CREAT | O_EXCL`` (atomic on local disks and on NFS v3+,
unlike ``flock``), holding the owner's host, pid and start time. A second run finds it and
stops with a message naming the holder. A lock left by a dead process on this host is taken
over with a warning; one from another host is never guessed at (delete it by hand).
"""
from __future__ import annotations

import json
import os
import socket
import time
import uuid
import warnings
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".lock"


class FolderLocked(RuntimeError):
    """Another live run holds the folder (the message names it)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _try_create(path: Path, me: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(me, f)
    return True


def _describe(holder: dict) -> str:
    return (f"{holder.get('what', 'a run')} pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder.get('started', 0)))}")


def _stale(holder: dict) -> bool:
    """A lock of a process of this host that is gone."""
    return (holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int)
            and not _alive(holder["pid"]))


def _in_use(folder, desc: str, path: Path) -> str:
    return (f"{folder} is in use by {desc} (lock file {path}); wait for it to finish, or delete the "
            f"lock file if that run is gone")


def lock_problem(folder: Path | str) -> str | None:
    """What ``folder_lock`` would refuse now (a live holder), read-only: a check before work."""
    path = Path(folder) / LOCK_NAME
    try:
        holder = json.loads(path.read_text() or "{}")
    except OSError:  # no lock (or no folder): nothing holds it
        return None
    except ValueError:
        holder = {}
    return None if _stale(holder) else _in_use(folder, _describe(holder), path)


@contextmanager
def folder_lock(folder: Path | str, what: str = "run"):
    """Hold ``folder/.lock`` for the block; raise ``FolderLocked`` if a live run holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
          "token": uuid.uuid4().hex, "what": what}
    for _ in range(3):
        if _try_create(path, me):
            break
        try:
            holder = json.loads(path.read_text() or "{}")
        except FileNotFoundError:
            continue  # released meanwhile: try again
        except ValueError:
            holder = {}  # being written right now, or garbage: treat as held
        desc = _describe(holder)
        if _stale(holder):
            warnings.warn(f"{path}: taking over the stale lock of {desc} (that process is gone)",
                          stacklevel=3)
            stale = path.with_name(f"{LOCK_NAME}.stale-{me['token']}")
            try:
                os.replace(path, stale)  # only one taker wins the rename
                stale.unlink()
            except FileNotFoundError:
                pass
            continue
        raise FolderLocked(_in_use(folder, desc, path))
    else:
        raise FolderLocked(f"{folder}: could not take the lock {path}")
    try:
        yield path
    finally:
        try:
            if json.loads(path.read_text()).get("token") == me["token"]:
                path.unlink()  # only ever our own lock
        except (FileNotFoundError, ValueError):
            pass


def unique_tmp(path: Path) -> Path:
    """A temporary name next to ``path`` that no other writer uses (pid + random)."""
    return path.with_name(f"{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a unique temporary name, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_tmp(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
