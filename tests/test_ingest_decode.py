"""Decoding: the luma the flow compares is the grayscale of the RGB frames, whatever the pixel format."""
import av
import cv2
import numpy as np
import pytest

from ingest.decode import decode_video


def gray_of_rgb(video) -> np.ndarray:
    return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in video.frames])


@pytest.mark.parametrize("short_side", [None, 120])
def test_luma_of_the_real_clips_is_the_grayscale_of_their_rgb(shared_data, short_side):
    for path in sorted((shared_data / "real_videos").iterdir()):
        video = decode_video(path, short_side=short_side, threads=1)
        assert video.gray.dtype == np.uint8 and video.gray.shape == video.frames.shape[:3]
        assert len(video) == len(video.frames) and np.array_equal(video.rgb(3), video.frames[3])
        if short_side:  # pictures are kept resized, never at source size
            assert min(video.gray.shape[1:]) == short_side == min(video._pictures[0].height,
                                                                  video._pictures[0].width)
        diff = np.abs(video.gray.astype(int) - gray_of_rgb(video))
        # the same luma up to the YUV -> RGB conversion's rounding (saturated colours clip)
        assert diff.mean() < 2.0 and np.percentile(diff, 99) <= 6, (path.name, diff.mean())


def write(path, codec: str, pix_fmt: str, frames: np.ndarray) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode())


@pytest.mark.parametrize("codec, pix_fmt, container", [
    ("mjpeg", "yuvj420p", "avi"),  # full-range YUV: the Y plane as it is
    ("mpeg4", "yuv420p", "avi"),  # limited range: rescaled to full range
    ("png", "rgb24", "mov"),  # no Y plane: converted from RGB
])
def test_luma_for_full_range_limited_range_and_rgb_videos(tmp_path, codec, pix_fmt, container):
    x = np.linspace(0, 255, 96)
    ramp = np.broadcast_to(x[None, :, None], (64, 96, 3))  # grey ramp: luma = the value
    frames = np.stack([np.roll(ramp, 4 * t, axis=1) for t in range(6)]).astype(np.uint8)
    path = tmp_path / f"v.{container}"
    write(path, codec, pix_fmt, frames)
    video = decode_video(path)
    assert video._pictures[0].format.name == pix_fmt
    diff = np.abs(video.gray.astype(int) - gray_of_rgb(video))
    assert diff.max() <= 3, (pix_fmt, diff.max())
    # and both are the source ramp, to within the codec's loss
    assert np.abs(video.gray.astype(int) - frames[..., 0]).mean() < 4
