"""Streaming decode (issue 20): the ingest never holds a whole video, yet writes the same bytes."""
import av
import numpy as np
import pytest

from ingest.clips import clip_frames, stream_video_samples, video_samples
from ingest.decode import DecodeError, decode_video
from ingest.flow import get_backend
from ingest.ucf101 import VideoEntry


def entry_for(path) -> VideoEntry:
    return VideoEntry(path=f"X/v_{path.stem}.avi", class_name="X", label=0, group=1, clip=1)


@pytest.mark.parametrize("short_side, n_clips, spacing", [(None, 25, "even"), (128, 5, "random")])
def test_streamed_samples_are_bit_equal_to_whole_video_ones_on_the_real_clips(shared_data, short_side,
                                                                             n_clips, spacing):
    backend = get_backend("dis", preset="fast")
    for path in sorted((shared_data / "real_videos").iterdir()):
        entry = entry_for(path)
        plan = lambda n: clip_frames(n, n_clips, spacing=spacing, seed=3, video_id=entry.video_id)
        video = decode_video(path, short_side=short_side, threads=1)
        before = video_samples(video, entry, plan(len(video)), backend, 20.0)
        info, clips, after = stream_video_samples(path, entry, plan, backend, 20.0,
                                                  short_side=short_side, threads=1)
        assert (len(info), info.fps, info.width, info.height) == (len(video), video.fps, video.width, video.height)
        assert info.decode_passes == 1 and clips == plan(len(video))
        assert len(after) == len(before) == n_clips
        for old, new in zip(before, after):
            assert old.keys() == new.keys() and all(old[k] == new[k] for k in old), (path.name, old["__key__"])


def write(path, frames: np.ndarray, codec: str = "mpeg4") -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode())


def moving(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)
    return np.stack([np.roll(base, 2 * t, axis=1) for t in range(n)])


@pytest.mark.parametrize("n_frames, n_clips", [(6, 2), (14, 25)])  # clamped; clips overlapping
def test_short_and_overlapping_clips_match_too(tmp_path, n_frames, n_clips):
    path = tmp_path / "v_X_g01_c01.avi"
    write(path, moving(n_frames))
    backend, entry = get_backend("dis"), entry_for(path)
    plan = lambda n: clip_frames(n, n_clips)
    video = decode_video(path, threads=1)
    before = video_samples(video, entry, plan(len(video)), backend, 20.0)
    info, _, after = stream_video_samples(path, entry, plan, backend, 20.0)
    assert len(info) == n_frames and before == after


def test_a_wrong_frame_count_is_replanned_and_a_non_video_is_a_decode_error(tmp_path, monkeypatch):
    path = tmp_path / "v_X_g01_c01.avi"
    write(path, moving(30))
    backend, entry = get_backend("dis"), entry_for(path)
    plan = lambda n: clip_frames(n, 3)
    expected = video_samples(decode_video(path), entry, plan(30), backend, 20.0)
    import ingest.decode
    real_init, lie = ingest.decode.VideoStream.__init__, {}

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self.declared = lie["count"]
    monkeypatch.setattr(ingest.decode.VideoStream, "__init__", init)
    for wrong in (24, 29, 31, 40):  # the container lies: the clips are planned again on the truth
        lie["count"] = wrong
        if wrong == 40:  # 10 frames short of the declared count: truncated, as decode_video says
            with pytest.raises(DecodeError, match="truncated"):
                stream_video_samples(path, entry, plan, backend, 20.0)
        else:
            info, clips, samples = stream_video_samples(path, entry, plan, backend, 20.0)
            assert info.decode_passes == 2 and len(info) == 30 and samples == expected
    monkeypatch.undo()
    bad = tmp_path / "v_Y_g01_c01.avi"
    bad.write_bytes(b"not a video" * 100)
    with pytest.raises(DecodeError, match="v_Y_g01_c01"):
        stream_video_samples(bad, entry, plan, backend, 20.0)
