"""SLIC segmentations computed once per clip and reused by every model, run and chain (issue 30).

Every model of a stream sees a clip through the same deterministic eval crop, so its SLIC
segments (``explanations.irof.slic_segments``, Quantus' call) are the same for all of them. The
explain stage keeps them as ``<root>/segments/<stream>/<video>__<clip:03d>.npz`` with the SHA-256
of the input they were computed from; a file whose input differs (other crop size, other
shards) is computed again and replaced. Files are written atomically, so parallel tasks may race
on a clip harmlessly.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from explanations.irof import slic_segments
from core.atomic import atomic_file
from shards.format import sample_key


def input_digest(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x).tobytes() + str((x.shape, x.dtype)).encode()).hexdigest()


def cached_segments(folder: Path, clips: list[tuple[str, int]], x: np.ndarray) -> np.ndarray:
    """(N, H, W) segments of ``x`` (N, C, H, W), one file per (video, clip) under ``folder``."""
    out = []
    for (video, clip), xi in zip(clips, x):
        path = Path(folder) / f"{sample_key(video, clip)}.npz"
        digest = input_digest(xi)
        if path.is_file():
            with np.load(path, allow_pickle=False) as npz:
                if str(npz["input_sha256"]) == digest:
                    out.append(npz["segments"])
                    continue
        segments = slic_segments(xi[None])[0]
        with atomic_file(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, segments=segments, input_sha256=np.str_(digest))
        out.append(segments)
    return np.stack(out)
