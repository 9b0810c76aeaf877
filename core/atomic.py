"""The one way this project writes a file that readers may open at any moment: under a unique
temporary name beside it, fsynced, then renamed over it (and the rename made durable). A reader
sees the old file or the new one, never part of one; a writer killed midway leaves at most its
temporary file (``<name>.tmp-<pid>-<random>``, which no reader's glob matches)."""
from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def unique_tmp(path: Path) -> Path:
    """A temporary name next to ``path`` that no other writer uses (pid + random)."""
    return path.with_name(f"{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextmanager
def atomic_file(path: Path | str, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; when the block succeeds, fsync it and
    rename it over ``path``. On an exception the temporary file is removed and ``path`` is untouched.

    ``durable=False`` skips the fsyncs: still all-or-nothing for readers and for a killed
    process, but not across a power loss. For files that are cheap to make again and written
    by the thousand (an ingest's spooled videos, synthetic videos), where an fsync each costs
    more than redoing them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_tmp(path)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if durable:
            folder = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path | str, text: str, *, durable: bool = True) -> None:
    """``path``'s new text, written through :func:`atomic_file`."""
    with atomic_file(path, durable=durable) as tmp:
        tmp.write_text(text)
