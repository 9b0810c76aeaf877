"""A full disk reported as such: the folder, its free space and what the work needs (issue 31).

A write that fails with ENOSPC (or EDQUOT, a quota) anywhere in a run, also inside a Ray
task or trial, surfaces here as :class:`DiskFull`, whose message names the folder, the free
space there and, where the caller knows it, the space the plan needs. Nothing half-written is
taken as complete: every writer writes to a temporary name and renames (``atomic_file``).
"""
from __future__ import annotations

import errno
import re
import shutil
from pathlib import Path

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_FULL_TEXT = re.compile(r"\[Errno (28|122)\]|No space left on device|Disk quota exceeded")


class DiskFull(OSError):
    """No space left where a run writes (the message says where, how much is free, what is needed)."""

    def __str__(self) -> str:  # the message alone, without OSError's "[Errno 28]" prefix
        return self.strerror or super().__str__()


def size_text(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def existing_parent(path: Path | str) -> Path:
    """``path`` or its nearest ancestor that exists."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: Path | str) -> int:
    """Free bytes (for this user) on the filesystem holding ``path`` or its nearest existing parent."""
    return shutil.disk_usage(existing_parent(path)).free


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` or anything it wraps (causes, Ray's task errors, Tune's texts) is ENOSPC."""
    seen = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, DiskFull) or (isinstance(e, OSError) and e.errno in FULL_ERRNOS):
            return True
        if _FULL_TEXT.search(str(e)):  # a Ray traceback or Tune's error summary, as text
            return True
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None)]
    return False


def full_path(exc: BaseException) -> str | None:
    """The file an ENOSPC error names, if it does."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in FULL_ERRNOS and e.filename:
            return str(e.filename)
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None)]
    return None


def disk_full(folder: Path | str, *, needed: int | None = None, what: str = "the run",
              file: str | None = None, basis: str | None = None, detail: str | None = None) -> DiskFull:
    """A ``DiskFull`` naming ``folder``, its free space now and (when known) the space needed
    (``basis``: where that figure comes from; ``detail``: what failed, when no write said ENOSPC)."""
    free = free_bytes(folder)
    text = (f"disk full: {folder} has {size_text(free)} free"
            + (f", {what} needs about {size_text(needed)}" if needed is not None else "")
            + (f" ({basis})" if needed is not None and basis else "")
            + (f" (writing {file} failed)" if file else "")
            + (f" ({detail})" if detail else "")
            + "; free space there (or choose a folder on a larger disk) and run the same command "
              "again: finished work is kept")
    return DiskFull(errno.ENOSPC, text)
