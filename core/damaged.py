"""Results files that cannot be read: named, set aside, rebuilt (issue 31).

A Parquet part cut short (a crash on a network filesystem, a disk that filled up under a
writer that does not rename) or otherwise corrupt is found by reading it whole. The sweep
calls :func:`set_aside_damaged` under its root lock before any stage runs: each such file
is renamed ``<name>.damaged`` (never matched by the readers' ``*.parquet`` glob) with one
line naming it and what is wrong, so the stage that writes it sees the unit of work as not
done and does it again — every stage decides what to skip from the results it can read.
The report and statistics never set anything aside: they name the file
(``results.DamagedPart``) and say to rerun the sweep.

A part's inputs may be damaged too (a crash that cut the rows short may have cut the
checkpoint or the score file they came from). The sweep sets aside unreadable checkpoints
(``*.pt``) and score files (``*.npz``) the same way, found cheaply: both are zip archives,
and a file cut short loses the zip's central directory, at its end. A missing input is no
proof of anything: the stage that writes it sees its cell as not done (``pipeline.tune.
finished_metrics``, ``pruning.schedule.step_done`` ask for them) and reruns that cell, then the
stage downstream rebuilds its rows from the new inputs.
"""
from __future__ import annotations

import sys
import zipfile
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


def archive_problem(file: Path) -> str | None:
    """What is wrong with a zip archive (a torch checkpoint, a numpy ``.npz``) whose central
    directory cannot be read or that is shorter than its members; None if it opens."""
    try:
        size = Path(file).stat().st_size
        with zipfile.ZipFile(file) as archive:
            for info in archive.infolist():
                if info.header_offset + info.compress_size > size:
                    return f"member {info.filename} runs past the end of the file ({size} bytes)"
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        return f"{type(exc).__name__}: {exc}".strip()
    return None


def set_aside_damaged(results: Path, *, log=None, pattern: str = "*.parquet", problem_of=part_problem,
                      what: str = "results", then: str = "its rows will be rebuilt") -> list[tuple[Path, Path, str]]:
    """Set aside every unreadable ``pattern`` file under ``results``; (file, new name, problem) each.

    Call it holding the experiment root's lock: no writer of this root is running then, and
    finished files are renamed into place whole, so whatever does not read is damaged.
    """
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    found = []
    for file in sorted(Path(results).rglob(pattern)):
        problem = problem_of(file)
        if problem:
            target = set_aside(file)
            log(f"{what}: {file} cannot be read ({problem}); set aside as {target.name}, {then}")
            found.append((file, target, problem))
    return found


def set_aside_damaged_inputs(root: Path, *, log=None) -> list[tuple[Path, Path, str]]:
    """Set aside unreadable checkpoints and score files under the experiment ``root``: the
    stage that wrote each reruns its cell (see the module text)."""
    then = "the stage that wrote it reruns that cell"
    return [*set_aside_damaged(Path(root) / "checkpoints", log=log, pattern="*.pt", problem_of=archive_problem,
                               what="checkpoint", then=then),
            *set_aside_damaged(Path(root) / "scores", log=log, pattern="*.npz", problem_of=archive_problem,
                               what="scores", then=then)]
