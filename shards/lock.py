"""An exclusive lock on one output folder (an ingest ``--out`` or an experiment root).

It lives in ``shards`` because both ``ingest`` and ``training`` may import ``shards`` and
``shards`` imports nothing of ours (ARCHITECTURE.md: arrows point one way).

The lock is a file created with ``O_CREAT | O_EXCL`` (atomic on local disks and on NFS v3+,
unlike ``flock``), holding the owner's host, pid and start time. A second run finds it and
stops with a message naming the holder. A lock left by a dead process on this host is taken
over with a warning; one from another host is never guessed at (delete it by hand).

The lock's content is written to a unique temporary file first and linked to ``.lock``
(``link`` fails if the name exists, atomically, like ``O_EXCL``), so a lock file is never
seen half-written: an empty or unreadable ``.lock`` (a run on a full disk before this
change, a damaged file) holds no run, and is taken over with a warning like a dead
process's. A write that fails (a full disk) leaves no lock behind.
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
    """Create ``path`` holding ``me``, complete or not at all; False if it exists."""
    tmp = unique_tmp(path)
    try:
        tmp.write_text(json.dumps(me))  # a full disk fails here, before any lock exists
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError:  # a filesystem without hard links: exclusive create, then write
            return _try_create_excl(path, me)
    finally:
        tmp.unlink(missing_ok=True)


def _try_create_excl(path: Path, me: dict) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
    except OSError:
        path.unlink(missing_ok=True)  # never leave an empty lock (a full disk)
        raise
    return True


def _read_holder(path: Path) -> dict | None:
    """The holder a lock file names; None if it is empty or unreadable (no run holds it)."""
    holder = json.loads(path.read_text() or "null")  # FileNotFoundError: released meanwhile
    if isinstance(holder, dict) and holder.get("host") and isinstance(holder.get("pid"), int):
        return holder
    return None


def _take_over(path: Path, token: str) -> None:
    stale = path.with_name(f"{LOCK_NAME}.stale-{token}")
    try:
        os.replace(path, stale)  # only one taker wins the rename
        stale.unlink()
    except FileNotFoundError:
        pass


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
        holder = _read_holder(path)
    except (OSError, ValueError, UnicodeDecodeError):  # no lock, no folder, or damaged: held by nobody
        return None
    if holder is None or _stale(holder):
        return None
    return _in_use(folder, _describe(holder), path)


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
            holder = _read_holder(path)
        except FileNotFoundError:
            continue  # released meanwhile: try again
        except (ValueError, UnicodeDecodeError, OSError):
            holder = None
        if holder is None:  # written whole or not at all (see above): empty or damaged holds nobody
            warnings.warn(f"{path}: taking over a lock file that is empty or unreadable (a run that "
                          f"could not write it, e.g. on a full disk); no run holds it", stacklevel=3)
            _take_over(path, me["token"])
            continue
        desc = _describe(holder)
        if _stale(holder):
            warnings.warn(f"{path}: taking over the stale lock of {desc} (that process is gone)",
                          stacklevel=3)
            _take_over(path, me["token"])
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
        except (FileNotFoundError, ValueError, AttributeError):
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
