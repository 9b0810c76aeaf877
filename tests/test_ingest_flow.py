"""Flow backends and clip sampling on frames with a known motion (no Ray, no files)."""
import cv2
import numpy as np
import pytest
import torch

from ingest.clips import clip_frames, tile_quantised, video_samples
from ingest.decode import Video
from ingest.flow import FlowUnavailable, get_backend
from ingest.ucf101 import VideoEntry
from shards.format import STACK, decode_sample, quantise_flow, tile_flow
from tests.flow_fields import SHIFT, interior_median, translating


@pytest.mark.parametrize("name", ["dis", "farneback"])
def test_cpu_backends_recover_a_known_translation(name):
    frames = translating(4)
    flow = get_backend(name).pairs(frames, [0, 2])
    assert flow.shape == (2, 64, 80, 2) and flow.dtype == np.float32
    assert np.allclose(interior_median(flow), SHIFT, atol=0.1)


def test_tvl1_without_contrib_names_the_package():
    if hasattr(cv2, "optflow"):
        assert get_backend("tvl1").name == "tvl1"
    else:
        with pytest.raises(FlowUnavailable, match="opencv-contrib-python"):
            get_backend("tvl1")


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown flow method 'lk'"):
        get_backend("lk")


def test_raft_needs_real_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty_hub"))
    with pytest.raises(FlowUnavailable, match="random weights are never used"):
        get_backend("raft_small")
    with pytest.raises(FlowUnavailable, match="not found"):
        get_backend("raft_small", weights=tmp_path / "nothing.pth")


def test_raft_from_torchvisions_cache(tmp_path, monkeypatch):
    from torchvision.models.optical_flow import Raft_Small_Weights, raft_small
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    state = raft_small(weights=None).state_dict()
    torch.save(state, hub / "checkpoints" / Raft_Small_Weights.DEFAULT.url.rsplit("/", 1)[1])
    backend = get_backend("raft_small", device="cpu")
    assert all(torch.equal(v, state[k]) for k, v in backend.model.state_dict().items())


def test_raft_from_a_local_state_dict_batches_consistently(tmp_path):
    from torchvision.models.optical_flow import raft_small
    torch.manual_seed(0)
    path = tmp_path / "raft_small.pth"
    torch.save(raft_small(weights=None).state_dict(), path)
    frames = translating(4, h=36, w=44)  # not a multiple of 8: padded and cropped back
    one = get_backend("raft_small", weights=path, device="cpu", batch_size=1, updates=2)
    three = get_backend("raft_small", weights=path, device="cpu", batch_size=3, updates=2)
    a, b = one.pairs(frames, [0, 1, 2]), three.pairs(frames, [0, 1, 2])
    assert a.shape == (3, 36, 44, 2) and np.isfinite(a).all()
    assert np.allclose(a, b, atol=1e-3)


@pytest.mark.cuda
def test_raft_on_gpu_matches_cpu(tmp_path):
    from torchvision.models.optical_flow import raft_small
    path = tmp_path / "raft_small.pth"
    torch.save(raft_small(weights=None).state_dict(), path)
    frames = translating(3, h=64, w=64)
    cpu = get_backend("raft_small", weights=path, device="cpu", updates=2).pairs(frames, [0, 1])
    gpu = get_backend("raft_small", weights=path, updates=2)
    assert gpu.device.type == "cuda"
    assert np.allclose(gpu.pairs(frames, [0, 1]), cpu, atol=1e-2)


def test_clip_positions():
    assert clip_frames(40, 3) == [list(range(0, 11)), list(range(14, 25)), list(range(29, 40))]
    assert clip_frames(40, 1) == [list(range(14, 25))]
    short = clip_frames(5, 2)  # shorter than a clip: clamped, the last frame repeated
    assert short == [[0, 1, 2, 3, 4, 4, 4, 4, 4, 4, 4]] * 2
    r1 = clip_frames(100, 4, spacing="random", seed=0, video_id="v_A_g01_c01")
    assert r1 == clip_frames(100, 4, spacing="random", seed=0, video_id="v_A_g01_c01")
    assert r1 != clip_frames(100, 4, spacing="random", seed=0, video_id="v_A_g01_c02")
    assert all(0 <= c[0] <= 89 and c == list(range(c[0], c[0] + 11)) for c in r1)


class CountingDis:
    """The real DIS backend, recording which pairs it was asked for."""
    name, luma = "dis", True

    def __init__(self):
        self.dis, self.asked = get_backend("dis"), []

    def fields(self, frames, starts):
        self.asked += list(starts)
        return self.dis.fields(frames, starts)


def test_overlapping_clips_compute_each_pair_once_and_short_videos_are_clamped():
    entry = VideoEntry("Move/v_Move_g01_c01.avi", "Move", 0, 1, 1)
    backend = CountingDis()
    video = Video.from_rgb(translating(20), fps=25.0, width=80, height=64)
    samples = video_samples(video, entry, clip_frames(20, 3), backend, 20.0)
    assert sorted(backend.asked) == list(range(19))  # clips 0-10, 4-14, 9-19 share pairs
    decoded = [decode_sample(s) for s in samples]
    assert [d.meta.centre_frame for d in decoded] == [5, 9, 14] and not decoded[0].meta.clamped
    assert np.array_equal(decoded[1].rgb.shape, (64, 80, 3))

    short = Video.from_rgb(translating(6), fps=25.0, width=80, height=64)
    backend = CountingDis()
    [sample] = [decode_sample(s) for s in video_samples(short, entry, clip_frames(6, 1), backend, 20.0)]
    assert backend.asked == [0, 1, 2, 3, 4] and sample.meta.clamped
    flow = sample.flow
    assert np.allclose(interior_median(np.stack([flow[:5], flow[STACK:STACK + 5]], -1)), SHIFT, atol=0.2)
    assert np.abs(flow[5:STACK]).max() < 0.1 and np.abs(flow[STACK + 5:]).max() < 0.1


def test_tiling_quantised_pairs_equals_the_format_tiling():
    fields = np.random.default_rng(0).normal(0, 8, (STACK, 5, 7, 2)).astype(np.float32)
    assert np.array_equal(tile_quantised([quantise_flow(f, 12.0) for f in fields]), tile_flow(fields, 12.0))
