"""Clip positions and the shard samples of one decoded video.

A clip is STACK + 1 consecutive frames: its flow stack holds the STACK consecutive-pair
fields, its RGB frame is the centre one. Clips of a video overlap, so each needed pair's flow
is computed once per video. Videos shorter than STACK + 1 frames still give clips: indices
are clamped to the last frame (repeated frames have zero flow) and the samples say so.
"""
from __future__ import annotations

import zlib

import numpy as np

from shards.format import STACK, SampleMeta, encode_sample, quantise_flow

from .decode import Video
from .ucf101 import VideoEntry

SPACINGS = ("even", "random")


def clip_frames(n_frames: int, n_clips: int, *, spacing: str = "even", seed: int = 0,
                video_id: str = "") -> list[list[int]]:
    """Per clip, its STACK + 1 source frame indices (clamped to the video)."""
    if n_frames < 1 or n_clips < 1:
        raise ValueError(f"need at least one frame and one clip, got {n_frames}, {n_clips}")
    last_start = max(0, n_frames - (STACK + 1))
    if spacing == "even":
        starts = np.rint(np.linspace(0, last_start, n_clips)) if n_clips > 1 else [last_start // 2]
    elif spacing == "random":  # reproducible per video, whatever order videos are processed in
        rng = np.random.default_rng([seed, zlib.crc32(video_id.encode())])
        starts = np.sort(rng.integers(0, last_start + 1, n_clips))
    else:
        raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
    return [[min(int(s) + j, n_frames - 1) for j in range(STACK + 1)] for s in starts]


def tile_quantised(fields_q: list[np.ndarray]) -> np.ndarray:
    """STACK quantised (H, W, 2) fields → the (2*STACK*H, W) tile of ``shards.format.tile_flow``
    (quantisation is per element, so quantising each pair once and tiling gives the same)."""
    return np.concatenate([q[..., 0] for q in fields_q] + [q[..., 1] for q in fields_q], axis=0)


def needed_pairs(clips: list[list[int]]) -> list[int]:
    """First frames of the flow pairs the clips need, each once (a repeated frame needs none)."""
    return sorted({a for frames in clips for a, b in zip(frames, frames[1:]) if a != b})


def video_samples(video: Video, entry: VideoEntry, clips: list[list[int]], backend,
                  bound: float) -> list[dict]:
    """The encoded WebDataset samples of one video, clip by clip. Each needed pair's flow is
    quantised as soon as it is computed (a video's float fields are never all held at once)."""
    needed = needed_pairs(clips)
    frames = video.gray if backend.luma else video.frames
    quantised = {a: quantise_flow(f, bound) for a, f in zip(needed, backend.fields(frames, needed))}
    still = quantise_flow(np.zeros((*video.gray.shape[1:3], 2), np.float32), bound)
    samples = []
    for clip, frames in enumerate(clips):
        fields = [quantised[a] if a != b else still for a, b in zip(frames, frames[1:])]
        centre = frames[STACK // 2]
        meta = SampleMeta(video=entry.video_id, clip=clip, label=entry.label,
                          class_name=entry.class_name, frames=frames, centre_frame=centre,
                          fps=video.fps, width=video.width, height=video.height,
                          flow_method=backend.name, flow_bound=bound,
                          flow_options=dict(getattr(backend, "options", {})),
                          clamped=len(video) < STACK + 1)
        samples.append(encode_sample(video.rgb(centre), tile_quantised(fields), meta))
    return samples
