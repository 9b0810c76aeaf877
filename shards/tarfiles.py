"""Writing and reading shard tar files, with the DALI index beside each.

A shard ``shard-000003.tar`` is complete when it and ``shard-000003.idx`` both exist: both
are written under temporary names and renamed, the index first, so a reader (or a resumed
ingest) never sees a partial shard. Tar members are written with fixed owner, mode and
mtime, so the same samples always give the same bytes.

The index is the text format of DALI's ``wds2idx`` (version v1.2): a header line
``v1.2 <samples>`` and per sample ``<ext> <data offset> <size> <member name>`` repeated for
each component. We compute it while writing instead of re-reading the tar with ``tar``.
"""
from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from core.atomic import atomic_file
from shards.format import COMPONENTS, ShardFormatError

INDEX_VERSION = "v1.2"
BLOCK = tarfile.BLOCKSIZE
# What to do about a damaged shard: the ingest rebuilds every shard that check_shard_files refuses.
REBUILD_HINT = ("rerun the ingest (the same `python -m ingest.build_shards` command, or the sweep "
                "with its `data` stage): it rebuilds shards that are missing, unindexed or damaged")


def index_path(tar_path: Path) -> Path:
    return Path(tar_path).with_suffix(".idx")


def is_complete(tar_path: Path) -> bool:
    return Path(tar_path).is_file() and index_path(tar_path).is_file()


def _component_order(sample: dict) -> list[str]:
    known = [c for c in COMPONENTS if c in sample]
    return known + sorted(k for k in sample if k not in COMPONENTS and not k.startswith("__"))


def write_shard(tar_path: Path, samples: Iterable[dict]) -> int:
    """Write samples (``__key__`` + component bytes) atomically; returns the sample count.
    The index is renamed into place first, so a complete tar always has its index."""
    tar_path = Path(tar_path)
    lines = []
    with atomic_file(tar_path) as tmp_tar, atomic_file(index_path(tar_path)) as tmp_idx:
        with open(tmp_tar, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for sample in samples:
                key = sample["__key__"]
                parts = []
                for ext in _component_order(sample):
                    data = bytes(sample[ext])
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size, info.mtime, info.mode = len(data), 0, 0o444
                    info.uname = info.gname = ""
                    tar.addfile(info, io.BytesIO(data))
                    padded = -(-len(data) // BLOCK) * BLOCK
                    parts.append(f"{ext} {tar.offset - padded} {len(data)} {info.name}")
                lines.append(" ".join(parts))
        if not lines:
            raise ValueError(f"{tar_path}: refusing to write an empty shard")
        tmp_idx.write_text(f"{INDEX_VERSION} {len(lines)}\n" + "\n".join(lines) + "\n")
    return len(lines)


def read_index(tar_path: Path) -> list[dict[str, tuple[int, int]]]:
    """Parse the DALI index: per sample, {ext: (data offset, size)}."""
    return [parts for _, parts in read_index_samples(tar_path)]


def read_index_samples(tar_path: Path) -> list[tuple[str, dict[str, tuple[int, int]]]]:
    """Parse the DALI index: per sample, (key, {ext: (data offset, size)}), in file order."""
    idx = index_path(tar_path)
    text = idx.read_text().splitlines()
    if not text or not text[0].startswith(INDEX_VERSION + " "):
        raise ShardFormatError(f"{idx}: not a {INDEX_VERSION} DALI webdataset index")
    samples = []
    for line in text[1:]:
        fields = line.split()
        if not fields or len(fields) % 4:
            raise ShardFormatError(f"{idx}: malformed line {line!r}")
        try:
            parts = {fields[i]: (int(fields[i + 1]), int(fields[i + 2])) for i in range(0, len(fields), 4)}
        except ValueError:
            raise ShardFormatError(f"{idx}: malformed line {line!r}") from None
        key = fields[3].rsplit("/", 1)[-1].partition(".")[0]
        samples.append((key, parts))
    if len(samples) != int(text[0].split()[1]):
        raise ShardFormatError(f"{idx}: header says {text[0].split()[1]} samples, found {len(samples)}")
    return samples


def check_shard_files(tar_path: Path, components: tuple[str, ...] = COMPONENTS
                      ) -> list[tuple[str, dict[str, tuple[int, int]]]]:
    """Refuse, before any reader starts, a shard whose tar or ``.idx`` is missing, whose index is
    malformed, lists a sample without one of ``components`` or does not match the tar (a member
    header where the index points elsewhere), or whose tar is truncated (a sample's data past
    its end). The message names the shard, the sample where known, and the fix. Cheap: reads
    the index, the tar's size and two member headers. Returns the index (``read_index_samples``).
    """
    tar_path = Path(tar_path)
    idx = index_path(tar_path)
    if not tar_path.is_file():
        raise ShardFormatError(f"{tar_path}: missing (its index {idx.name} is there: {idx.is_file()}); {REBUILD_HINT}")
    if not idx.is_file():
        raise ShardFormatError(f"{tar_path}: its DALI index {idx.name} is missing; {REBUILD_HINT}")
    try:
        samples = read_index_samples(tar_path)
    except ShardFormatError as exc:
        raise ShardFormatError(f"{exc}; {REBUILD_HINT}") from None
    if not samples:
        raise ShardFormatError(f"{idx}: lists no samples; {REBUILD_HINT}")
    _check_header(tar_path, *samples[0])  # an index of another tar fails here
    size = tar_path.stat().st_size
    for key, parts in samples:
        missing = [c for c in components if c not in parts]
        if missing:
            raise ShardFormatError(f"{tar_path}: sample {key!r} lacks {missing} (per {idx.name}); {REBUILD_HINT}")
        end = max(offset + length for offset, length in parts.values())
        if end > size:
            raise ShardFormatError(f"{tar_path}: truncated: {size} bytes, but sample {key!r} ends at "
                                   f"byte {end} (per {idx.name}); {REBUILD_HINT}")
    _check_header(tar_path, *samples[-1])
    return samples


def _check_header(tar_path: Path, key: str, parts: dict[str, tuple[int, int]]) -> None:
    """The tar member header before a sample's first component must name it, with its size."""
    ext, (offset, length) = next(iter(parts.items()))
    info = None
    if offset >= BLOCK:
        with open(tar_path, "rb") as f:
            f.seek(offset - BLOCK)
            try:
                info = tarfile.TarInfo.frombuf(f.read(BLOCK), tarfile.ENCODING, "surrogateescape")
            except tarfile.TarError:
                pass
    name = info.name.rsplit("/", 1)[-1] if info else None
    if info is None or name != f"{key}.{ext}" or info.size != length:
        found = f"{name!r} of {info.size} bytes" if info else "no tar member header"
        raise ShardFormatError(
            f"{tar_path}: {index_path(tar_path).name} does not match the tar: sample {key!r} {ext} "
            f"at byte {offset} has {found}, the index says {key}.{ext} of {length} bytes; {REBUILD_HINT}")


def shard_problem(tar_path: Path) -> str | None:
    """The message of :func:`check_shard_files`, or None for a sound shard."""
    try:
        check_shard_files(tar_path)
    except (ShardFormatError, OSError) as exc:
        return str(exc)
    return None


def iter_shard(tar_path: Path) -> Iterator[dict]:
    """Yield raw samples ({'__key__', '__shard__', ext: bytes}) in file order.

    Reads only regular members as bytes: nothing is decoded, nothing is unpickled.
    """
    tar_path = Path(tar_path)
    current: dict | None = None
    try:
        with tarfile.open(tar_path, mode="r:") as tar:
            for member in tar:
                if not member.isreg():
                    continue
                base = member.name.rsplit("/", 1)[-1]
                key, dot, ext = base.partition(".")
                if not dot:
                    raise ShardFormatError(f"{tar_path}: member {member.name!r} has no extension")
                if current is None or current["__key__"] != key:
                    if current is not None:
                        yield current
                    current = {"__key__": key, "__shard__": str(tar_path)}
                current[ext] = tar.extractfile(member).read()
    except tarfile.TarError as exc:
        raise ShardFormatError(f"{tar_path}: unreadable tar: {exc}") from exc
    if current is not None:
        yield current
