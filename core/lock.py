"""An exclusive lock on one output folder (an ingest ``--out`` or an experiment root).

It lives in ``shards`` because both ``ingest`` and ``training`` may import ``shards`` and
``shards`` imports nothing of ours (ARCHITECTURE.md: arrows point one way).

The lock is a file created with ``O_CREAT | O_EXCL`` (atomic on local disks and on NFS v3+,
unlike ``flock``), holding the owner's host, pid and start time. A second run finds it and
stops with a message naming the holder. A lock left by a dead process on this host is taken
over with a warning.

A lock of another host (a Ray worker of the data stage on another node, a sweep started
there) cannot have its pid checked from here. While it is held, a thread of the holder
refreshes the lock file's mtime every ``CROSSROADS_LOCK_HEARTBEAT_S`` seconds (default 30),
and the lock says so (``heartbeat_s``). A lock of another host whose mtime is older than
``CROSSROADS_LOCK_STALE_S`` (default 300 s, and at least 4 of its holder's heartbeats)
belongs to a host or process that is gone: it is taken over with a warning naming its host,
pid and the heartbeat's age. The margin covers NFS attribute caching (up to 60 s by default)
and clock differences between hosts (the age compares the file server's mtime with this
host's clock). A lock of another host without ``heartbeat_s`` (written before this rule)
is never guessed at: delete it by hand.

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
import threading
import time
import uuid
import warnings
from contextlib import contextmanager
from pathlib import Path

from core.atomic import unique_tmp
from core.node import process_running

LOCK_NAME = ".lock"
HEARTBEAT_S = 30.0  # how often a holder refreshes its lock's mtime (CROSSROADS_LOCK_HEARTBEAT_S)
STALE_S = 300.0  # a lock of another host whose mtime is older is taken over (CROSSROADS_LOCK_STALE_S)


class FolderLocked(RuntimeError):
    """Another live run holds the folder (the message names it)."""


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


def _seconds(name: str, default: float) -> float:
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{name}={text!r}: expected a number of seconds > 0")
    return value


def heartbeat_s() -> float:
    return _seconds("CROSSROADS_LOCK_HEARTBEAT_S", HEARTBEAT_S)


def _take_over(path: Path, token: str, judged: dict | None) -> None:
    """Remove the lock ``judged`` dead; if another taker replaced it meanwhile, put theirs back."""
    stale = path.with_name(f"{LOCK_NAME}.stale-{token}")
    try:
        os.replace(path, stale)  # only one taker wins the rename
    except FileNotFoundError:
        return
    try:
        moved = _read_holder(stale)
    except (OSError, ValueError, UnicodeDecodeError):
        moved = None
    if (moved or {}).get("token") != (judged or {}).get("token"):  # a live lock, made since we looked
        try:
            os.link(stale, path)
        except OSError:
            pass
    stale.unlink(missing_ok=True)


def _describe(holder: dict) -> str:
    return (f"{holder.get('what', 'a run')} pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder.get('started', 0)))}")


def _stale(holder: dict) -> bool:
    """A lock of a process of this host that is gone."""
    return (holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int)
            and not process_running(holder["pid"]))


def _heartbeat_age(holder: dict, path: Path) -> tuple[float, float] | None:
    """For a lock of another host that heartbeats: (seconds since its last beat, the age after
    which it counts as dead); None for this host's locks and those without a heartbeat."""
    if holder.get("host") == socket.gethostname() or not isinstance(holder.get("heartbeat_s"), (int, float)):
        return None
    limit = max(_seconds("CROSSROADS_LOCK_STALE_S", STALE_S), 4 * float(holder["heartbeat_s"]))
    return max(0.0, time.time() - path.stat().st_mtime), limit


def _age_text(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 \
        else f"{seconds / 3600:.1f} h"


def _foreign_dead(holder: dict, path: Path) -> str | None:
    """Why a lock of another host is dead (its heartbeat stopped long enough ago), or None."""
    age = _heartbeat_age(holder, path)
    if age is None or age[0] <= age[1]:
        return None
    return (f"its host {holder['host']} is not this one ({socket.gethostname()}), so pid {holder['pid']} "
            f"cannot be checked, and its heartbeat stopped {_age_text(age[0])} ago (more than "
            f"{age[1]:.0f} s: CROSSROADS_LOCK_STALE_S)")


def _in_use(folder, desc: str, path: Path, holder: dict | None = None) -> str:
    try:
        age = _heartbeat_age(holder, path) if holder else None
    except FileNotFoundError:
        age = None
    beat = "" if age is None else (f"; its heartbeat is {_age_text(age[0])} old: a lock of another host is "
                                   f"taken over once its heartbeat is older than {age[1]:.0f} s")
    return (f"{folder} is in use by {desc} (lock file {path}){beat}; wait for it to finish, or delete the "
            f"lock file if that run is gone")


def lock_problem(folder: Path | str) -> str | None:
    """What ``folder_lock`` would refuse now (a live holder), read-only: a check before work."""
    path = Path(folder) / LOCK_NAME
    try:
        holder = _read_holder(path)
    except (OSError, ValueError, UnicodeDecodeError):  # no lock, no folder, or damaged: held by nobody
        return None
    try:
        if holder is None or _stale(holder) or _foreign_dead(holder, path):
            return None
    except FileNotFoundError:  # released meanwhile
        return None
    return _in_use(folder, _describe(holder), path, holder)


@contextmanager
def folder_lock(folder: Path | str, what: str = "run"):
    """Hold ``folder/.lock`` for the block; raise ``FolderLocked`` if a live run holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    beat = heartbeat_s()
    me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
          "token": uuid.uuid4().hex, "what": what, "heartbeat_s": beat}
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
            _take_over(path, me["token"], None)
            continue
        desc = _describe(holder)
        if _stale(holder):
            warnings.warn(f"{path}: taking over the stale lock of {desc} (that process is gone)",
                          stacklevel=3)
            _take_over(path, me["token"], holder)
            continue
        try:
            dead = _foreign_dead(holder, path)
        except FileNotFoundError:
            continue  # released meanwhile
        if dead:
            warnings.warn(f"{path}: taking over the lock of {desc}: {dead}", stacklevel=3)
            _take_over(path, me["token"], holder)
            continue
        raise FolderLocked(_in_use(folder, desc, path, holder))
    else:
        raise FolderLocked(f"{folder}: could not take the lock {path}")
    stop = threading.Event()
    threading.Thread(target=_beat, args=(path, me["token"], beat, stop), daemon=True,
                     name=f"lock heartbeat {path}").start()
    try:
        yield path
    finally:
        stop.set()
        try:
            if json.loads(path.read_text()).get("token") == me["token"]:
                path.unlink()  # only ever our own lock
        except (FileNotFoundError, ValueError, AttributeError):
            pass


def _beat(path: Path, token: str, every: float, stop: threading.Event) -> None:
    """Refresh the lock's mtime every ``every`` s while it is ours (never another run's, if
    ours was taken over while this host was cut off)."""
    while not stop.wait(every):
        try:
            if json.loads(path.read_text()).get("token") != token:
                return
            os.utime(path)
        except FileNotFoundError:
            return
        except (OSError, ValueError, AttributeError):  # a network filesystem's hiccup: beat again later
            continue
