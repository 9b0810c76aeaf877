"""Results files that cannot be read: named, set aside, rebuilt (issue 31).

A Parquet part cut short (a crash on a network filesystem, a disk that filled up under a
writer that does not rename) or otherwise corrupt is found by reading it whole. The sweep
calls :func:`set_aside_damaged` under its root lock before any stage runs: each such file
is renamed ``<name>.damaged`` (never matched by the readers' ``*.parquet`` glob) with one
line naming it and what is wrong, so the stage that writes it sees the unit of work as not
done and does it again — every stage decides what to skip from the results it can read.
The report and statistics never set anything aside: they name the file
(``results.DamagedPart``) and say to rerun the sweep.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

DAMAGED_SUFFIX = ".damaged"


def part_problem(file: Path) -> str | None:
    """What is wrong with a Parquet file that cannot be read whole; None if it reads."""
    try:
        pq.read_table(file)
    except (pa.ArrowException, OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}".strip()
    return None


def readable(file: Path) -> bool:
    """The file exists and reads whole (what "done" is made of; checkpoints are inputs only)."""
    return Path(file).is_file() and part_problem(file) is None


def set_aside(file: Path) -> Path:
    """Rename ``file`` to ``<name>.damaged`` (``.damaged-2``, … if that exists); the new path."""
    target = file.with_name(file.name + DAMAGED_SUFFIX)
    n = 1
    while target.exists():
        n += 1
        target = file.with_name(f"{file.name}{DAMAGED_SUFFIX}-{n}")
    file.rename(target)
    return target


def set_aside_damaged(results: Path, *, log=None) -> list[tuple[Path, Path, str]]:
    """Set aside every unreadable ``*.parquet`` under ``results``; (file, new name, problem) each.

    Call it holding the experiment root's lock: no writer of this root is running then, and
    finished files are renamed into place whole, so whatever does not read is damaged.
    """
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    found = []
    for file in sorted(Path(results).rglob("*.parquet")):
        problem = part_problem(file)
        if problem:
            target = set_aside(file)
            log(f"results: {file} cannot be read ({problem}); set aside as {target.name}, "
                f"its rows will be rebuilt")
            found.append((file, target, problem))
    return found
