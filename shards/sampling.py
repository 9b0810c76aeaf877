"""Per-epoch clip sampling for training: fresh clip positions per video every epoch.

Ingest stores ``n`` evenly spaced clips per train video (``data.train_clips_stored``); each
train epoch uses ``k`` of them (``data.clips_per_video``), drawn TSN-style: the stored clips,
in temporal order, are cut into ``k`` equal segments and one clip is drawn uniformly from
each. The draw depends only on (seed, epoch, video), so every DDP worker and a resumed run
draw the same clips. The loader gives DALI a per-epoch index listing only the drawn samples
(``epoch_index_lines``), so clips that are not drawn are never read or decoded.
"""
from __future__ import annotations

import zlib
from collections.abc import Iterable

import numpy as np

from shards.format import parse_key

_STREAM = 2  # keeps these draws apart from the shard order ([seed, epoch]) and DALI seed ([seed, epoch, 1])


def segment_draw(n: int, k: int, rng: np.random.Generator) -> list[int]:
    """Indices into ``n`` ordered items: one drawn from each of ``k`` equal segments (all if k >= n)."""
    if k >= n:
        return list(range(n))
    return [int(rng.integers((i * n) // k, ((i + 1) * n) // k)) for i in range(k)]


def draw_clips(stored: dict[str, list[int]], k: int, seed: int, epoch: int) -> dict[str, list[int]]:
    """Per video, the ``k`` clips (of its stored clip indices) epoch ``epoch`` trains on."""
    drawn = {}
    for video, clips in stored.items():
        clips = sorted(clips)
        rng = np.random.default_rng([seed, epoch, _STREAM, zlib.crc32(video.encode())])
        drawn[video] = [clips[i] for i in segment_draw(len(clips), k, rng)]
    return drawn


def even_clips(stored: dict[str, list[int]], k: int) -> dict[str, list[int]]:
    """Per video, ``k`` of its stored clips at the centres of ``k`` equal segments (all if fewer):
    a fixed, evenly spaced subset for a light evaluation."""
    out = {}
    for video, clips in stored.items():
        clips, n = sorted(clips), len(clips)
        out[video] = clips if k >= n else [clips[(2 * i + 1) * n // (2 * k)] for i in range(k)]
    return out


def stored_clips(keys: Iterable[str]) -> dict[str, list[int]]:
    """Sample keys (``<video>__<clip>``) → per video, its clip indices."""
    stored: dict[str, list[int]] = {}
    for key in keys:
        video, clip = parse_key(key)
        stored.setdefault(video, []).append(clip)
    return stored


def epoch_index_lines(index_lines: dict, drawn: dict[str, list[int]]) -> dict:
    """Per shard, the lines of its ``.idx`` (after the header) whose samples were drawn.

    ``index_lines``: shard → list of (key, line) in file order."""
    chosen = {video: set(clips) for video, clips in drawn.items()}
    out = {}
    for shard, lines in index_lines.items():
        keep = []
        for key, line in lines:
            video, clip = parse_key(key)
            if clip in chosen.get(video, ()):
                keep.append(line)
        out[shard] = keep
    return out
