"""Decode a whole video to RGB frames with PyAV (threaded), optionally resizing the short side."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

# a container may declare a frame or two more than it holds; more missing means truncation
TRUNCATION_SLACK = 2


class DecodeError(RuntimeError):
    """A file that is not a readable video (the message names the file and the problem)."""


@dataclass
class Video:
    frames: np.ndarray  # uint8 (T, H, W, 3) RGB, after any resize
    fps: float
    width: int  # source size
    height: int


def resized_shape(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) with the short side scaled to ``short_side`` (even sizes), or unchanged."""
    if short_side is None:
        return width, height
    scale = short_side / min(width, height)
    return (max(2, 2 * round(width * scale / 2)), max(2, 2 * round(height * scale / 2)))


def decode_video(path: Path, *, short_side: int | None = None, threads: int = 0) -> Video:
    """All frames of the first video stream; ``threads=0`` lets FFmpeg choose."""
    path = Path(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DecodeError(f"{path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            stream.codec_context.thread_count = threads
            width, height = stream.codec_context.width, stream.codec_context.height
            out_w, out_h = resized_shape(width, height, short_side)
            frames = [frame.to_ndarray(format="rgb24", width=out_w, height=out_h, interpolation="AREA")
                      for frame in container.decode(stream)]
            declared = stream.frames
            fps = float(stream.average_rate or stream.guessed_rate or 0)
    except DecodeError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise DecodeError(f"{path}: cannot decode: {exc}") from exc
    if not frames:
        raise DecodeError(f"{path}: no decodable frames")
    if declared and len(frames) < declared - TRUNCATION_SLACK:
        raise DecodeError(f"{path}: truncated: the container declares {declared} frames, "
                          f"only {len(frames)} decode")
    return Video(np.stack(frames), fps, width, height)
