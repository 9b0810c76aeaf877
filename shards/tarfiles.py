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
import os
import uuid
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from .format import COMPONENTS, ShardFormatError

INDEX_VERSION = "v1.2"
BLOCK = tarfile.BLOCKSIZE


def index_path(tar_path: Path) -> Path:
    return Path(tar_path).with_suffix(".idx")


def is_complete(tar_path: Path) -> bool:
    return Path(tar_path).is_file() and index_path(tar_path).is_file()


def _component_order(sample: dict) -> list[str]:
    known = [c for c in COMPONENTS if c in sample]
    return known + sorted(k for k in sample if k not in COMPONENTS and not k.startswith("__"))


def write_shard(tar_path: Path, samples: Iterable[dict]) -> int:
    """Write samples (``__key__`` + component bytes) atomically; returns the sample count."""
    tar_path = Path(tar_path)
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    suffix = f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"  # unique: never another writer's
    tmp_tar = tar_path.with_name(tar_path.name + suffix)
    idx = index_path(tar_path)
    tmp_idx = idx.with_name(idx.name + suffix)
    lines = []
    try:
        with open(tmp_tar, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
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
            raw.flush()
            os.fsync(raw.fileno())
        if not lines:
            raise ValueError(f"{tar_path}: refusing to write an empty shard")
        with open(tmp_idx, "w") as f:
            f.write(f"{INDEX_VERSION} {len(lines)}\n" + "\n".join(lines) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_idx, idx)
        os.replace(tmp_tar, tar_path)
    finally:
        for tmp in (tmp_tar, tmp_idx):
            tmp.unlink(missing_ok=True)
    return len(lines)


def read_index(tar_path: Path) -> list[dict[str, tuple[int, int]]]:
    """Parse the DALI index: per sample, {ext: (data offset, size)}."""
    idx = index_path(tar_path)
    text = idx.read_text().splitlines()
    if not text or not text[0].startswith(INDEX_VERSION + " "):
        raise ShardFormatError(f"{idx}: not a {INDEX_VERSION} DALI webdataset index")
    samples = []
    for line in text[1:]:
        fields = line.split()
        if len(fields) % 4:
            raise ShardFormatError(f"{idx}: malformed line {line!r}")
        samples.append({fields[i]: (int(fields[i + 1]), int(fields[i + 2]))
                        for i in range(0, len(fields), 4)})
    if len(samples) != int(text[0].split()[1]):
        raise ShardFormatError(f"{idx}: header says {text[0].split()[1]} samples, found {len(samples)}")
    return samples


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
