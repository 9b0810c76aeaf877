"""Decode a whole video with PyAV: luma for the flow, RGB only for the frames asked for.

Flow compares grayscale images and a video needs RGB only for its clips' centre frames, so
the decoder keeps each picture as FFmpeg gives it (resized first, if asked), copies its luma plane (Y of planar YUV,
rescaled to full range like ``cv2.COLOR_RGB2GRAY`` of the RGB frame) and converts to RGB
only on demand. On UCF101 (XviD) this makes decoding ~3x cheaper than converting every frame.
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path

import av
import cv2
import numpy as np

# a container may declare a frame or two more than it holds; more missing means truncation
TRUNCATION_SLACK = 2
# planar 8-bit YUV: plane 0 is the luma; "yuvj" formats are full range, the others limited
PLANAR_YUV = {f"yuv{s}p" for s in ("420", "422", "444", "411", "410", "440")}
PLANAR_YUVJ = {f"yuvj{s}p" for s in ("420", "422", "444", "440")}
# limited-range luma [16, 235] → full range [0, 255], as the YUV → RGB conversion does
LIMITED_TO_FULL = np.clip(np.rint((np.arange(256) - 16) * 255 / 219), 0, 255).astype(np.uint8)


class DecodeError(RuntimeError):
    """A file that is not a readable video (the message names the file and the problem)."""


class Video:
    """A decoded video: ``gray`` (uint8 (T, H, W) full-range luma, after any resize) for the
    flow, ``rgb(i)`` or ``frames`` (uint8 (T, H, W, 3)) for pictures; ``width``/``height``
    are the source size."""

    def __init__(self, gray: np.ndarray, fps: float, width: int, height: int, pictures,
                 size: tuple[int, int] | None = None):
        self.gray, self.fps, self.width, self.height = gray, fps, width, height
        self._pictures, self._size = pictures, size  # av.VideoFrame per frame, or RGB arrays

    @classmethod
    def from_rgb(cls, frames: np.ndarray, fps: float, width: int, height: int) -> "Video":
        """A video from RGB frames already in memory (tests, other decoders)."""
        gray = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])
        video = cls(gray, fps, width, height, frames)
        video.__dict__["frames"] = frames  # the cached_property, already known
        return video

    def __len__(self) -> int:
        return len(self.gray)

    def rgb(self, index: int) -> np.ndarray:
        picture = self._pictures[index]
        if isinstance(picture, np.ndarray):
            return picture
        w, h = self._size
        return picture.to_ndarray(format="rgb24", width=w, height=h, interpolation="AREA")

    @cached_property
    def frames(self) -> np.ndarray:
        return np.stack([self.rgb(i) for i in range(len(self))])


def resized_shape(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) with the short side scaled to ``short_side`` (even sizes), or unchanged."""
    if short_side is None:
        return width, height
    scale = short_side / min(width, height)
    return (max(2, 2 * round(width * scale / 2)), max(2, 2 * round(height * scale / 2)))


def luma(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    """Full-range grayscale (height, width) of a decoded picture, from its Y plane when it has one."""
    name = frame.format.name
    if name in PLANAR_YUV or name in PLANAR_YUVJ:
        plane = frame.planes[0]
        y = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, :plane.width]
        full_range = name in PLANAR_YUVJ or frame.color_range == 2  # AVCOL_RANGE_JPEG
        y = y.copy() if full_range else cv2.LUT(y, LIMITED_TO_FULL)
    else:  # packed, paletted or high bit depth: let FFmpeg convert
        y = cv2.cvtColor(frame.to_ndarray(format="rgb24"), cv2.COLOR_RGB2GRAY)
    if y.shape != (height, width):
        y = cv2.resize(y, (width, height), interpolation=cv2.INTER_AREA)
    return y


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
            size = resized_shape(width, height, short_side)
            pictures = container.decode(stream)
            if size != (width, height):  # keep the resized pictures: memory stays bounded
                pictures = (frame.reformat(*size, interpolation="AREA") for frame in pictures)
            pictures = list(pictures)
            gray = [luma(frame, *size) for frame in pictures]
            declared = stream.frames
            fps = float(stream.average_rate or stream.guessed_rate or 0)
    except DecodeError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise DecodeError(f"{path}: cannot decode: {exc}") from exc
    if not pictures:
        raise DecodeError(f"{path}: no decodable frames")
    if declared and len(pictures) < declared - TRUNCATION_SLACK:
        raise DecodeError(f"{path}: truncated: the container declares {declared} frames, "
                          f"only {len(pictures)} decode")
    return Video(np.stack(gray), fps, width, height, pictures, size)


class VideoStream:
    """A video opened for one streaming pass: ``fps``, ``width``/``height`` (source),
    ``size`` (after any resize), ``declared`` (the container's frame count, 0 if unknown) and
    ``pictures()``, which yields FFmpeg's pictures one at a time (resized when asked), never
    holding more than the decoder's own few. Errors are ``DecodeError`` naming the file."""

    def __init__(self, path: Path, *, short_side: int | None = None, threads: int = 1,
                 thread_type: str = "AUTO"):
        self.path = Path(path)
        try:
            self._container = av.open(str(self.path))
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise DecodeError(f"{self.path}: cannot decode: {exc}") from exc
        try:
            if not self._container.streams.video:
                raise DecodeError(f"{self.path}: no video stream")
            stream = self._stream = self._container.streams.video[0]
            stream.thread_type = thread_type
            stream.codec_context.thread_count = threads
            self.width, self.height = stream.codec_context.width, stream.codec_context.height
            self.size = resized_shape(self.width, self.height, short_side)
            self.declared = stream.frames or 0
            self.fps = float(stream.average_rate or stream.guessed_rate or 0)
        except BaseException:
            self._container.close()
            raise

    def __enter__(self) -> "VideoStream":
        return self

    def __exit__(self, *exc) -> None:
        self._container.close()

    def pictures(self):
        decoded = self._container.decode(self._stream)
        while True:
            try:
                frame = next(decoded)
            except StopIteration:
                return
            except (av.FFmpegError, OSError, ValueError) as exc:
                raise DecodeError(f"{self.path}: cannot decode: {exc}") from exc
            if self.size != (self.width, self.height):  # as decode_video: resized before anything else
                frame = frame.reformat(*self.size, interpolation="AREA")
            yield frame

    def luma(self, picture: av.VideoFrame) -> np.ndarray:
        return luma(picture, *self.size)

    def rgb(self, picture: av.VideoFrame) -> np.ndarray:
        w, h = self.size
        return picture.to_ndarray(format="rgb24", width=w, height=h, interpolation="AREA")


def count_packets(path: Path) -> int:
    """Non-empty packets of the first video stream (demuxed, not decoded): a cheap guess of the
    frame count where the container declares none."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return sum(1 for packet in container.demux(stream) if packet.size)
    except (av.FFmpegError, OSError, ValueError, IndexError):
        return 0
