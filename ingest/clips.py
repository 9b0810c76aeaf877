"""Clip positions and the shard samples of one decoded video.

A clip is STACK + 1 consecutive frames: its flow stack holds the STACK consecutive-pair
fields, its RGB frame is the centre one. Clips of a video overlap, so each needed pair's flow
is computed once per video. Videos shorter than STACK + 1 frames still give clips: indices
are clamped to the last frame (repeated frames have zero flow) and the samples say so.
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from shards.format import STACK, SampleMeta, encode_sample, quantise_flow

from ingest.decode import TRUNCATION_SLACK, DecodeError, Video, VideoStream, count_packets
from ingest.ucf101 import VideoEntry

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
        samples.append(_clip_sample(entry, video, backend, bound, clip, frames, fields,
                                    video.rgb(frames[STACK // 2]), clamped=len(video) < STACK + 1))
    return samples


def _clip_sample(entry, video, backend, bound: float, clip: int, frames, fields, centre_rgb, *,
                 clamped: bool) -> dict:
    """One clip's encoded sample: its centre RGB frame, its tiled quantised fields, its meta."""
    meta = SampleMeta(video=entry.video_id, clip=clip, label=entry.label,
                      class_name=entry.class_name, frames=frames, centre_frame=frames[STACK // 2],
                      fps=video.fps, width=video.width, height=video.height,
                      flow_method=backend.name, flow_bound=bound,
                      flow_options=dict(getattr(backend, "options", {})), clamped=clamped)
    return encode_sample(centre_rgb, tile_quantised(fields), meta)


@dataclass(frozen=True)
class StreamedVideo:
    """What ``stream_video_samples`` learnt about a video (``len`` is its frame count)."""
    frames: int
    fps: float
    width: int
    height: int
    decode_passes: int  # 2 when the container's frame count was wrong and the clips re-planned

    def __len__(self) -> int:
        return self.frames


def stream_video_samples(path, entry: VideoEntry, plan: Callable[[int], list[list[int]]], backend,
                         bound: float, *, short_side: int | None = None, threads: int = 1
                         ) -> tuple[StreamedVideo, list[list[int]], list[dict]]:
    """``video_samples`` of the decoded ``path`` without holding the video: frames stream from
    the decoder, and only the frames of the clip being built (its STACK + 1 flow inputs and its
    centre RGB) and the quantised fields a later clip still needs are kept. Memory is bounded
    by the clip length and count, not by the video's length; the samples are bit-equal to
    ``video_samples(decode_video(path, ...), entry, plan(len(video)), ...)``.

    ``plan(n_frames)`` gives the clips (``clip_frames``), which depend on the frame count, so
    the count is taken from the container (or a demux-only packet count) before decoding; if
    the decoder then gives another count, the video is decoded again with the clips planned
    on the true count. A count short of the declared one by more than ``TRUNCATION_SLACK`` is
    a truncated file (``DecodeError``), as in ``decode_video``."""
    with VideoStream(path, short_side=short_side, threads=threads) as video:
        declared, fps, width, height = video.declared, video.fps, video.width, video.height
    guess = declared or count_packets(path) or 1
    n, clips, samples = _stream_once(path, entry, guess, plan, backend, bound, short_side, threads)
    passes = 1
    if n != guess:
        if n == 0:
            raise DecodeError(f"{path}: no decodable frames")
        if declared and n < declared - TRUNCATION_SLACK:
            raise DecodeError(f"{path}: truncated: the container declares {declared} frames, "
                              f"only {n} decode")
        again, clips, samples = _stream_once(path, entry, n, plan, backend, bound, short_side, threads)
        passes = 2
        if again != n:
            raise DecodeError(f"{path}: decodes to {n} frames, then to {again}")
    return StreamedVideo(n, fps, width, height, passes), clips, samples


def _stream_once(path, entry, n_plan, plan, backend, bound, short_side, threads):
    """One decoding pass with the clips planned for ``n_plan`` frames: (frames decoded, clips,
    samples); the samples are only right if the count equals ``n_plan``."""
    clips = plan(n_plan)
    flow_frames = {i for frames in clips for a, b in zip(frames, frames[1:]) if a != b for i in (a, b)}
    centres = {frames[STACK // 2] for frames in clips}
    ends: dict[int, list[int]] = {}  # last frame → clips complete once it is decoded (in order)
    for k, frames in enumerate(clips):
        ends.setdefault(frames[-1], []).append(k)
    window, rgb, quantised, samples = {}, {}, {}, []
    n = 0
    with VideoStream(path, short_side=short_side, threads=threads) as video:
        still = quantise_flow(np.zeros((video.size[1], video.size[0], 2), np.float32), bound)
        for i, picture in enumerate(video.pictures()):
            n = i + 1
            if i > clips[-1][-1]:
                continue  # past the last clip: only counted
            if i in flow_frames:
                window[i] = video.luma(picture) if backend.luma else video.rgb(picture)
            if i in centres:
                rgb[i] = video.rgb(picture)
            for k in ends.get(i, ()):
                frames = clips[k]
                todo = [a for a, b in zip(frames, frames[1:]) if a != b and a not in quantised]
                if todo:
                    lo, hi = todo[0], todo[-1] + 1
                    stack = np.stack([window[j] for j in range(lo, hi + 1)])
                    for a, field in zip(todo, backend.fields(stack, [a - lo for a in todo])):
                        quantised[a] = quantise_flow(field, bound)
                fields = [quantised[a] if a != b else still for a, b in zip(frames, frames[1:])]
                samples.append(_clip_sample(entry, video, backend, bound, k, frames, fields,
                                            rgb[frames[STACK // 2]], clamped=n_plan < STACK + 1))
                # what no later clip needs goes (clips are in order of their first frame)
                keep_from = clips[k + 1][0] if k + 1 < len(clips) else math.inf
                for held in (window, quantised):
                    for j in [j for j in held if j < keep_from]:
                        del held[j]
                later_centre = clips[k + 1][STACK // 2] if k + 1 < len(clips) else math.inf
                for j in [j for j in rgb if j < later_centre]:
                    del rgb[j]
    return n, clips, samples
