"""DALI loaders against the reference reader and known answers, on small shards written here."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from shards.dali import DEFAULT_FLOW_BOUND, LoaderConfig, make_loader
from shards.format import STACK, ShardFormatError, decode_sample, dequantise_flow, quantise_flow
from shards.reference import flip, normalised_planes, reference_loader
from shards.tarfiles import iter_shard, write_shard
from tests.shard_samples import CLASSES, noise, write_shards


def same_field_everywhere(h: int, w: int):
    """All 10 x fields and all 10 y fields are one smooth, signed, position-unique pattern."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    pattern = 2.0 + 12.0 * xx / w + 5.0 * yy / h  # strictly positive, varies along both axes
    def content():
        rgb = np.stack([xx * 255 / w, yy * 255 / h, np.full_like(xx, 128)], -1).astype(np.uint8)
        return rgb, np.repeat(pattern[None, :, :, None], STACK, 0).repeat(2, -1)
    return content


@pytest.fixture(scope="module")
def odd_shards(tmp_path_factory):
    """3 shards × 4 videos × 3 clips of noise at an odd size (45×61), so crop rounding matters."""
    return write_shards(tmp_path_factory.mktemp("odd"), 3, 4, 3, noise(45, 61))


@pytest.fixture(scope="module")
def square_shards(tmp_path_factory):
    """2 shards × 4 videos × 3 clips at 32×32: a scale-1 train crop is the whole image."""
    return write_shards(tmp_path_factory.mktemp("square"), 2, 4, 3, noise(32, 32, seed=1))


@pytest.fixture(scope="module")
def pattern_shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("pattern"), 1, 8, 2, same_field_everywhere(40, 56))


def by_key(batches) -> dict:
    out = {}
    for b in batches:
        for i, (video, clip) in enumerate(zip(b["video"], b["clip"].tolist())):
            key = (video, clip)
            assert key not in out, f"{key} seen twice in one epoch"
            out[key] = (b["x"][i], int(b["label"][i]))
    return out


def expected_label(video: str) -> int:
    return int(video[-1]) % CLASSES


@pytest.mark.parametrize("stream", ["spatial", "temporal"])
@pytest.mark.parametrize("ten_crop,mean_subtraction", [(False, False), (True, True)])
def test_eval_batches_equal_reference(odd_shards, stream, ten_crop, mean_subtraction):
    cfg = LoaderConfig(stream=stream, batch_size=5, input_size=32, ten_crop=ten_crop,
                       mean_subtraction=mean_subtraction)
    loader = make_loader(odd_shards, cfg)
    dali = by_key(loader)
    reference = by_key(reference_loader(odd_shards, cfg, workers=0))
    assert len(loader) == 8  # 36 samples in batches of 5, the partial last one kept
    assert dali.keys() == reference.keys() and len(dali) == 36
    for key, (x, label) in dali.items():
        ref_x, ref_label = reference[key]
        assert label == ref_label == expected_label(key[0])
        assert x.shape == ref_x.shape == ((10,) if ten_crop else ()) + (cfg.channels, 32, 32)
        torch.testing.assert_close(x, ref_x, rtol=0, atol=1e-4)


def test_flow_scale_divides_the_flow_and_matches_the_reference(odd_shards):
    """flow_scale = flow_bound puts the temporal input in [-1, 1] (TSN-style), exactly the
    unscaled flow divided by the bound, in DALI and the NumPy reference alike."""
    common = dict(stream="temporal", batch_size=6, input_size=32)
    pixels = by_key(make_loader(odd_shards, LoaderConfig(**common)))
    cfg = LoaderConfig(flow_scale=DEFAULT_FLOW_BOUND, **common)
    scaled, reference = by_key(make_loader(odd_shards, cfg)), by_key(reference_loader(odd_shards, cfg, workers=0))
    assert scaled.keys() == pixels.keys() == reference.keys()
    assert max(float(x.abs().max()) for x, _ in pixels.values()) > 1.5  # the fixture moves more than a pixel
    for key, (x, _) in scaled.items():
        assert float(x.abs().max()) <= 1.0
        torch.testing.assert_close(x, pixels[key][0] / DEFAULT_FLOW_BOUND, rtol=0, atol=1e-5)
        torch.testing.assert_close(x, reference[key][0], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="flow_scale 0 must be positive"):
        LoaderConfig(flow_scale=0, **common)


def test_ten_crop_flips_negate_flow_x(odd_shards):
    cfg = LoaderConfig(stream="temporal", batch_size=4, input_size=32, ten_crop=True)
    x = next(iter(make_loader(odd_shards, cfg)))["x"].numpy()
    np.testing.assert_allclose(x[:, 5:, :10], -x[:, :5, :10, :, ::-1], atol=1e-5)
    np.testing.assert_allclose(x[:, 5:, 10:], x[:, :5, 10:, :, ::-1], atol=1e-5)


@pytest.mark.parametrize("crop_mode", ["corner", "random"])
@pytest.mark.parametrize("stream", ["spatial", "temporal"])
def test_train_flip_equals_flipping_by_hand(square_shards, stream, crop_mode):
    """Full-size crops of a square image are the whole image: each train sample is the eval
    sample or its hand-made flip (frames mirrored, every x field negated), and both occur."""
    common = dict(stream=stream, batch_size=6, input_size=32)
    train_cfg = LoaderConfig(train=True, crop_mode=crop_mode, crop_scales=(1.0,), **common)
    train = by_key(make_loader(square_shards, train_cfg))
    plain = by_key(make_loader(square_shards, LoaderConfig(**common)))
    assert train.keys() == plain.keys()
    flips = 0
    for key, (x, label) in train.items():
        unflipped, ref_label = plain[key]
        flipped = torch.from_numpy(flip(unflipped.numpy(), stream))
        assert label == ref_label
        if torch.allclose(x, unflipped, atol=1e-4):
            continue
        torch.testing.assert_close(x, flipped, rtol=0, atol=1e-4)
        flips += 1
    assert 0 < flips < len(train)


@pytest.mark.parametrize("stream", ["spatial", "temporal"])
def test_unresized_train_crops_are_windows_of_the_stored_frame(odd_shards, stream):
    """crop_mode="random": each sample is exactly an input-size window of the stored frame (the
    temporal one decoded from the crop's columns only), mirrored with x negated or not, and the
    windows move over the whole frame."""
    cfg = LoaderConfig(stream=stream, train=True, crop_mode="random", batch_size=4, input_size=32)
    frames = {(s.meta.video, s.meta.clip): normalised_planes(s, cfg)
              for path in sorted(odd_shards.glob("*.tar")) for s in map(decode_sample, iter_shard(path))}
    lefts, flips = set(), 0
    for key, (x, _) in by_key(make_loader(odd_shards, cfg)).items():
        planes, x = frames[key], x.numpy()
        h, w = planes.shape[1:]
        found = [(top, left, mirrored) for mirrored in (False, True) for top in range(h - 31)
                 for left in range(w - 31)
                 if np.allclose(flip(x, stream) if mirrored else x, planes[:, top:top + 32, left:left + 32],
                                rtol=0, atol=1e-4)]
        assert len(found) == 1, (key, found)
        lefts.add(found[0][1])
        flips += found[0][2]
    assert len(lefts) > 5 and 0 < flips < len(frames)


@pytest.mark.parametrize("stream", ["spatial", "temporal"])
def test_train_without_flip_never_mirrors(square_shards, stream):
    """flip=False (classes that are not mirror-symmetric): full-size train crops equal eval samples."""
    common = dict(stream=stream, batch_size=6, input_size=32)
    train = by_key(make_loader(square_shards, LoaderConfig(train=True, crop_mode="random", flip=False, **common)))
    plain = by_key(make_loader(square_shards, LoaderConfig(**common)))
    assert train.keys() == plain.keys()
    for key, (x, label) in train.items():
        torch.testing.assert_close(x, plain[key][0], rtol=0, atol=1e-4)


@pytest.mark.parametrize("crop_mode", ["corner", "random_resized", "random"])
def test_temporal_train_crop_is_shared_by_all_channels(pattern_shards, crop_mode):
    """Identical input fields stay identical after the crop, flip and resize, and x/y is the
    known resize-factor ratio (crop height / crop width), negated when flipped."""
    scales = (1.0, 0.875, 0.75, 0.66)
    cfg = LoaderConfig(stream="temporal", train=True, batch_size=8, input_size=24,
                       crop_mode=crop_mode, crop_scales=scales)
    allowed = {sh / sw for i, sw in enumerate(scales) for j, sh in enumerate(scales) if abs(i - j) <= 1}
    ratios = []
    for batch in make_loader(pattern_shards, cfg):
        for x in batch["x"]:
            torch.testing.assert_close(x[:10], x[:1].expand(10, -1, -1), rtol=0, atol=1e-5)
            torch.testing.assert_close(x[10:], x[10:11].expand(10, -1, -1), rtol=0, atol=1e-5)
            ratio = float((x[0] * x[10]).sum() / (x[10] * x[10]).sum())
            torch.testing.assert_close(x[0], ratio * x[10], rtol=1e-4, atol=1e-3)
            ratios.append(ratio)
    assert any(r < 0 for r in ratios) and any(r > 0 for r in ratios)
    if crop_mode == "random":  # no resize: displacements keep their size
        assert all(abs(abs(r) - 1) < 1e-4 for r in ratios)
        return
    assert len({round(abs(r), 3) for r in ratios}) > 1  # non-square crops scale x and y apart
    if crop_mode == "corner":
        assert all(min(abs(abs(r) - a) for a in allowed) < 1e-4 for r in ratios)
    else:
        assert all(0.75 - 1e-4 <= abs(r) <= 4 / 3 + 1e-4 for r in ratios)


def test_flow_displacements_follow_the_resize(tmp_path):
    """Known answer: a constant flow (3, -2) px, corner crops of half the short side (20 px of
    a 40×56 frame) resized to 24 px: displacements grow by 24/20, x changes sign when flipped."""
    def constant():
        flow = np.zeros((STACK, 40, 56, 2), np.float32)
        flow[..., 0], flow[..., 1] = 3.0, -2.0
        return np.zeros((40, 56, 3), np.uint8), flow
    write_shards(tmp_path, 1, 6, 1, constant)
    cfg = LoaderConfig(stream="temporal", train=True, batch_size=6, input_size=24, crop_scales=(0.5,))
    stored = dequantise_flow(quantise_flow(np.array([3.0, -2.0])))  # what the shard holds
    x = next(iter(make_loader(tmp_path, cfg)))["x"]
    signs = torch.sign(x[:, 0, 0, 0])
    assert set(signs.tolist()) == {-1.0, 1.0}
    expected_x = signs[:, None, None, None] * float(stored[0]) * 24 / 20
    torch.testing.assert_close(x[:, :10], expected_x.expand(-1, 10, 24, 24), rtol=0, atol=1e-4)
    torch.testing.assert_close(x[:, 10:], torch.full_like(x[:, 10:], float(stored[1]) * 24 / 20),
                               rtol=0, atol=1e-4)


def test_spatial_train_shapes_labels_and_range(odd_shards):
    cfg = LoaderConfig(stream="spatial", train=True, batch_size=6, input_size=24, dtype="bfloat16")
    batch = next(iter(make_loader(odd_shards, cfg)))
    assert batch["x"].shape == (6, 3, 24, 24) and batch["x"].dtype == torch.bfloat16
    assert batch["label"].dtype == batch["clip"].dtype == torch.int64
    assert batch["label"].tolist() == [expected_label(v) for v in batch["video"]]
    assert -2.2 < float(batch["x"].min()) and float(batch["x"].max()) < 2.7  # ImageNet-normalised


def keys_of(batches) -> list:
    return [k for b in batches for k in zip(b["video"], b["clip"].tolist())]


@pytest.mark.parametrize("train", [False, True])
def test_workers_read_disjoint_covering_parts_every_epoch(odd_shards, train):
    # 36 samples, 3 workers of 12, batches of 4: no partial batches, so an epoch is exact.
    loaders = [make_loader(odd_shards, LoaderConfig(stream="spatial", train=train, batch_size=4,
                                                    input_size=16, shard_id=i, num_shards=3))
               for i in range(3)]
    for _ in range(2):
        parts = [keys_of(loader) for loader in loaders]
        assert [len(p) for p in parts] == [12, 12, 12] and [len(loader) for loader in loaders] == [3, 3, 3]
        everything = [k for p in parts for k in p]
        assert len(set(everything)) == 36


def test_uneven_workers_eval_everything_and_train_in_lockstep(odd_shards):
    seen = []
    for i in range(5):  # 36 samples over 5 workers: 7 or 8 each, batches of 3 (or 4 in train)
        evaluate = make_loader(odd_shards, LoaderConfig(batch_size=3, input_size=16, shard_id=i, num_shards=5))
        for _ in range(2):  # the same part every epoch, no empty batch
            batches = list(evaluate)
            assert len(batches) == len(evaluate) == -(-evaluate.worker_samples // 3)
            assert all(len(b["video"]) > 0 for b in batches)
        seen += keys_of(batches)
        train = make_loader(odd_shards, LoaderConfig(batch_size=4, input_size=16, train=True, shard_id=i,
                                                     num_shards=5))
        assert len(train) == 1 and [len(b["video"]) for b in train] == [4]
    assert len(seen) == len(set(seen)) == 36
    with pytest.raises(ValueError, match="batch_size 9 is more than the 7 samples worker 0/5"):
        make_loader(odd_shards, LoaderConfig(batch_size=9, input_size=16, train=True, num_shards=5))


def test_same_seed_same_order_and_each_epoch_reshuffled(odd_shards):
    def two_epochs(seed):
        loader = make_loader(odd_shards, LoaderConfig(stream="temporal", train=True, batch_size=6,
                                                      input_size=16, seed=seed))
        return [[(keys_of([b]), b["x"]) for b in loader] for _ in range(2)]
    first, again, other = two_epochs(7), two_epochs(7), two_epochs(8)
    for epoch_a, epoch_b in zip(first, again):
        for (keys_a, x_a), (keys_b, x_b) in zip(epoch_a, epoch_b):
            assert keys_a == keys_b
            torch.testing.assert_close(x_a, x_b, rtol=0, atol=0)
    order = [[k for keys, _ in epoch for k in keys] for epoch in first]
    assert order[0] != order[1] and sorted(order[0]) == sorted(order[1])
    assert order[0] != [k for keys, _ in other[0] for k in keys]


@pytest.mark.parametrize("overrides,problem", [({"flow_bound": 10.0}, "flow bound 10.0"),
                                               ({"format_version": 99}, "format version 99")])
def test_refuses_shard_of_other_bound_or_version(tmp_path, odd_shards, overrides, problem):
    write_shards(tmp_path, 1, 1, 1, noise(32, 32), **overrides)
    bad = tmp_path / "shard-000000.tar"
    good = sorted(odd_shards.glob("*.tar"))
    with pytest.raises(ShardFormatError, match=problem) as err:
        make_loader(good + [bad], LoaderConfig(stream="temporal", input_size=32))
    assert str(bad) in str(err.value)


def test_frames_smaller_than_an_unresized_crop_are_refused(odd_shards):
    with pytest.raises(ValueError, match=r"shard-000000.tar: frames are 61x45, smaller than input_size 48"):
        make_loader(odd_shards, LoaderConfig(input_size=48))
    with pytest.raises(ValueError, match="smaller than input_size 48"):
        make_loader(odd_shards, LoaderConfig(input_size=48, train=True, crop_mode="random"))
    assert len(make_loader(odd_shards, LoaderConfig(input_size=48, train=True, batch_size=4))) == 9


def test_bad_config_and_missing_shards_are_named(tmp_path):
    with pytest.raises(ValueError, match="stream 'depth'"):
        LoaderConfig(stream="depth")
    with pytest.raises(ValueError, match="shard_id 2"):
        LoaderConfig(shard_id=2, num_shards=2)
    with pytest.raises(FileNotFoundError, match="no complete shards"):
        make_loader(tmp_path, LoaderConfig())


@pytest.mark.cuda
@pytest.mark.parametrize("stream", ["spatial", "temporal"])
def test_gpu_matches_cpu(odd_shards, stream):
    """nvJPEG may differ from libjpeg-turbo by a grey level; everything else is the same graph."""
    grey = {"spatial": 1 / (255 * 0.225), "temporal": 20.0 / 127.5}[stream]
    common = dict(stream=stream, batch_size=5, input_size=32)
    cpu = by_key(make_loader(odd_shards, LoaderConfig(device="cpu", **common)))
    gpu = by_key(make_loader(odd_shards, LoaderConfig(device="gpu", **common)))
    assert cpu.keys() == gpu.keys()
    for key, (x, label) in gpu.items():
        assert x.is_cuda and label == cpu[key][1]
        torch.testing.assert_close(x.cpu(), cpu[key][0], rtol=0, atol=grey + 1e-4)
    train = make_loader(odd_shards, LoaderConfig(device="gpu", train=True, **common))
    batch = next(iter(train))
    assert batch["x"].is_cuda and batch["x"].shape == (5, 3 if stream == "spatial" else 20, 32, 32)


def test_corrupt_jpeg_is_named_by_shard_and_key(tmp_path):
    write_shards(tmp_path, 1, 4, 1, noise(32, 32))
    shard = tmp_path / "shard-000000.tar"
    samples = [dict(s) for s in iter_shard(shard)]
    samples[2]["flow.jpg"] = samples[2]["flow.jpg"][:60]  # truncated mid-header
    write_shard(shard, [{k: v for k, v in s.items() if k != "__shard__"} for s in samples])
    loader = make_loader(tmp_path, LoaderConfig(stream="temporal", batch_size=2, input_size=16))
    with pytest.raises(ShardFormatError, match="v02__000") as err:
        list(loader)
    assert str(shard) in str(err.value)


@pytest.mark.slow  # builds the shared synthetic shards (session fixture) if no other test did
def test_synthetic_shards_both_streams_match_reference_and_manifest(synthetic_shards):
    manifest = pl.read_parquet(synthetic_shards / "manifest.parquet").filter(pl.col("status") == "ok")
    labels = dict(zip(manifest["video"], manifest["label"]))
    for subset in ("test", "train"):
        rows = manifest.filter(pl.col("subset") == subset)
        expected = {(v, c) for v, n in zip(rows["video"], rows["clips"]) for c in range(n)}
        for stream in ("spatial", "temporal"):
            cfg = LoaderConfig(stream=stream, batch_size=16, input_size=56)
            dali = by_key(make_loader(synthetic_shards / subset, cfg))
            assert dali.keys() == expected
            assert all(label == labels[video] for (video, _), (_, label) in dali.items())
            if subset == "test":
                reference = by_key(reference_loader(synthetic_shards / subset, cfg, workers=0))
                for key, (x, _) in dali.items():
                    torch.testing.assert_close(x, reference[key][0], rtol=0, atol=1e-4)
            train = make_loader(synthetic_shards / subset, LoaderConfig(stream=stream, train=True, batch_size=16,
                                                                        input_size=56))
            batch = next(iter(train))
            assert batch["x"].shape == (16, cfg.channels, 56, 56) and torch.isfinite(batch["x"]).all()
            assert batch["label"].tolist() == [labels[v] for v in batch["video"]]


def test_epoch_left_early_restarts_in_eval_and_continues_in_train(odd_shards):
    evaluate = make_loader(odd_shards, LoaderConfig(batch_size=5, input_size=16))
    first = next(iter(evaluate))
    assert len(keys_of(evaluate)) == 36  # the whole epoch again, from its first sample
    assert keys_of([next(iter(evaluate))]) == keys_of([first])
    train = make_loader(odd_shards, LoaderConfig(train=True, batch_size=6, input_size=16))
    started = keys_of([next(iter(train))])
    rest = keys_of(train)
    assert len(rest) == 30 and sorted(started + rest) == sorted(keys_of(evaluate))


def test_set_epoch_gives_that_epoch_whatever_came_before(odd_shards):
    """A run resumed at epoch k (a fresh loader, set_epoch(k)) reads exactly what an
    uninterrupted run read in its epoch k: the same samples, order, crops and flips."""
    cfg = LoaderConfig(stream="temporal", train=True, batch_size=6, input_size=16, seed=3, num_shards=2)

    def epoch(loader, k):
        loader.set_epoch(k)
        return [(keys_of([b]), b["x"]) for b in loader]
    straight = make_loader(odd_shards, cfg)
    epochs = [epoch(straight, k) for k in range(3)]
    resumed = epoch(make_loader(odd_shards, cfg), 2)
    assert [keys for keys, _ in resumed] == [keys for keys, _ in epochs[2]]
    for (_, x_a), (_, x_b) in zip(resumed, epochs[2]):
        torch.testing.assert_close(x_a, x_b, rtol=0, atol=0)
    orders = [[k for keys, _ in e for k in keys] for e in epochs]
    assert orders[0] != orders[1] != orders[2]  # still a new order every epoch
    assert epoch(straight, 2)[0][0] == epochs[2][0][0]  # the same epoch again, on demand
