"""Issue #14 part 4 (data): per-epoch clip resampling from the stored train clips, and the flow
algorithm and its settings recorded in the shards, the manifest and the rerun fingerprint."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import polars as pl
import pytest
import torch

from shards.dali import LoaderConfig, make_loader
from shards.format import SampleMeta
from shards.sampling import draw_clips, segment_draw
from shards.tarfiles import iter_shard
from tests.shard_samples import TINY, noise, write_shards
from core.config import ConfigError, ExperimentConfig
from training.data import loader_config
from pipeline.validation import config_problems

STORED, DRAWN = 6, 2  # clips stored per video, clips an epoch reads


@pytest.fixture(scope="module")
def six_clip_shards(tmp_path_factory):
    """2 shards × 3 videos × 6 stored clips of noise at 32×32."""
    return write_shards(tmp_path_factory.mktemp("six"), 2, 3, STORED, noise(32, 32, seed=2))


def read_epoch(loader, epoch=None):
    if epoch is not None:
        loader.set_epoch(epoch)
    pairs, xs = [], {}
    for batch in loader:
        for video, clip, x in zip(batch["video"], batch["clip"].tolist(), batch["x"]):
            pairs.append((video, clip))
            xs[(video, clip)] = x
    return pairs, xs


def test_segment_draw_takes_one_clip_from_each_equal_segment():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a, b, c = segment_draw(25, 3, rng)
        assert 0 <= a < 8 <= b < 16 <= c < 25
    assert segment_draw(4, 4, rng) == [0, 1, 2, 3] and segment_draw(3, 5, rng) == [0, 1, 2]  # all
    stored = {"v_a": [0, 1, 2, 3, 4, 5], "v_b": [0, 1, 2]}
    assert draw_clips(stored, 2, seed=1, epoch=4) == draw_clips(stored, 2, seed=1, epoch=4)


def test_each_epoch_draws_fresh_stored_clips_the_same_for_the_same_seed_and_epoch(six_clip_shards):
    cfg = LoaderConfig(stream="temporal", train=True, batch_size=4, input_size=16, seed=5,
                       clips_per_video=DRAWN)
    loader = make_loader(six_clip_shards, cfg)
    assert loader.samples == 2 * 3 * STORED and loader.worker_samples == 2 * 3 * DRAWN
    assert len(loader) == 2 * 3 * DRAWN // 4
    epochs = [read_epoch(loader, k) for k in range(3)]
    for pairs, _ in epochs:
        per_video = {}
        for video, clip in pairs:
            per_video.setdefault(video, []).append(clip)
        assert len(per_video) == 6 and len(pairs) == len(set(pairs)) == 12
        for clips in per_video.values():  # one from each half of the stored clips
            first, second = sorted(clips)
            assert 0 <= first < STORED // 2 <= second < STORED
    drawn = [sorted(pairs) for pairs, _ in epochs]
    assert len({tuple(d) for d in drawn}) > 1  # epochs draw different clips of a video
    assert all(d == sorted(draw_pairs(5, k)) for k, d in enumerate(drawn))

    resumed = make_loader(six_clip_shards, cfg)  # a fresh loader set to epoch 2 reads epoch 2
    pairs, xs = read_epoch(resumed, 2)
    assert pairs == epochs[2][0]
    for key, x in xs.items():
        torch.testing.assert_close(x, epochs[2][1][key], rtol=0, atol=0)
    plain = make_loader(six_clip_shards, cfg)  # without set_epoch: epochs 0, 1, ... in turn
    assert [read_epoch(plain)[0] for _ in range(2)] == [epochs[0][0], epochs[1][0]]
    other_seed = make_loader(six_clip_shards, dataclasses.replace(cfg, seed=6))
    assert sorted(read_epoch(other_seed, 0)[0]) != drawn[0]  # (equal by chance: 9^-6)


def draw_pairs(seed: int, epoch: int) -> list[tuple[str, int]]:
    stored = {f"v{s}{v}": list(range(STORED)) for s in range(2) for v in range(3)}
    return [(v, c) for v, clips in draw_clips(stored, DRAWN, seed, epoch).items() for c in clips]


def test_eval_reads_every_stored_clip_and_bad_counts_are_refused(six_clip_shards):
    evaluate = make_loader(six_clip_shards, LoaderConfig(batch_size=8, input_size=16))
    assert len(read_epoch(evaluate)[0]) == 2 * 3 * STORED
    # eval with clips_per_video: that many evenly spaced clips of each video (issue 25's light protocol)
    light = make_loader(six_clip_shards, LoaderConfig(batch_size=8, input_size=16, clips_per_video=2))
    assert len(read_epoch(light)[0]) == 2 * 3 * 2
    with pytest.raises(ValueError, match="clips_per_video 0"):
        LoaderConfig(clips_per_video=0)
    with pytest.raises(ValueError, match="clips_per_video 0"):
        LoaderConfig(train=True, clips_per_video=0)


def test_config_keys_reach_the_loader_and_are_validated():
    cfg = ExperimentConfig.from_dict({"data": {"clips_per_video": 3, "train_clips_stored": 25}})
    assert loader_config(cfg, "spatial", train=True).clips_per_video == 3
    assert loader_config(cfg, "spatial", train=False).clips_per_video is None
    same = ExperimentConfig.from_dict({"data": {"clips_per_video": 3}})
    assert loader_config(same, "spatial", train=True).clips_per_video is None  # everything stored, every epoch
    assert not config_problems(cfg, stages=["train"])
    bad = ExperimentConfig.from_dict({"data": {"clips_per_video": 5, "train_clips_stored": 3}})
    assert any("data.train_clips_stored: 3 is fewer than data.clips_per_video (5)" in p
               for p in config_problems(bad, stages=["train"]))
    with pytest.raises(ConfigError, match=r"data.train_clips_stored: 0 is not allowed \(must be > 0\)"):
        ExperimentConfig.from_dict({"data": {"train_clips_stored": 0}})


def test_flow_settings_are_checked_before_work():
    preset = ExperimentConfig.from_dict({"data": {"flow": "farneback", "dis_preset": "medium"}})
    assert any("data.dis_preset: 'medium' is only allowed with data.flow 'dis'" in p
               for p in config_problems(preset, ["train"]))
    import cv2

    from pipeline.preflight import preflight
    tvl1 = ExperimentConfig.from_dict({"data": {"flow": "tvl1", "synthetic": {}}})
    # what this machine lacks is the preflight's (#25), with the other missing inputs
    problems = [p for p in preflight(tvl1, ["data"], dry_run=True).problems if p.startswith("data.flow")]
    if hasattr(cv2, "optflow"):
        assert problems == []
    else:
        assert problems and "needs cv2.optflow" in problems[0] and "opencv-contrib-python" in problems[0]
    assert not [p for p in preflight(tvl1, ["train"], dry_run=True).problems if p.startswith("data.flow")]


def test_ingest_without_tvl1_exits_2_with_one_line(tmp_path, capsys):
    import cv2
    from ingest.build_shards import main
    if hasattr(cv2, "optflow"):
        pytest.skip("this OpenCV has cv2.optflow")
    (tmp_path / "v").mkdir()
    (tmp_path / "s").mkdir()
    assert main(["--videos", str(tmp_path / "v"), "--splits", str(tmp_path / "s"), "--split", "1",
                 "--out", str(tmp_path / "out"), "--flow", "tvl1"]) == 2
    err = capsys.readouterr().err
    assert "needs cv2.optflow" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow  # two small Ray ingests
def test_stage_stores_the_clips_and_records_the_flow_settings(tmp_path):
    from ingest.shard_plan import OptionsChanged
    from ingest.stage import run_data_stage

    data = {"synthetic": TINY, "split": 2, "clips_per_video": 1, "train_clips_stored": 3,
            "test_clips": 2, "short_side": 32, "workers": 1, "dis_preset": "ultrafast"}
    cfg = ExperimentConfig.from_dict({"experiment": {"name": "tiny", "root": str(tmp_path / "exp")},
                                      "data": data})
    run_data_stage(cfg, None)
    manifest = pl.read_parquet(cfg.paths.shards / "manifest.parquet")
    assert set(manifest.filter(pl.col("subset") == "train")["clips"]) == {3}  # train_clips_stored
    assert set(manifest.filter(pl.col("subset") == "test")["clips"]) == {2}
    assert set(manifest["flow_method"]) == {"dis"}
    assert {json.loads(o)["preset"] for o in manifest["flow_options"]} == {"ultrafast"}
    metas = [SampleMeta.from_json(raw["json"]) for tar in cfg.paths.shards.glob("*/shard-*.tar")
             for raw in iter_shard(tar)]
    assert metas and {(m.flow_method, json.dumps(m.flow_options)) for m in metas} == {("dis", '{"preset": "ultrafast"}')}
    for changed, words in (({"dis_preset": "medium"}, "flow_options: was {'preset': 'ultrafast'}, now {'preset': 'medium'}"),
                           ({"flow": "farneback", "dis_preset": None}, "flow: was 'dis', now 'farneback'"),
                           ({"train_clips_stored": 4}, "clips_per_video: was 3, now 4")):
        other = ExperimentConfig.from_dict({"experiment": {"name": "tiny", "root": str(tmp_path / "exp")},
                                            "data": {**data, **changed}})
        with pytest.raises(OptionsChanged) as err:
            run_data_stage(other, None)
        assert words in str(err.value)


@pytest.mark.slow  # builds the shared synthetic shards (session fixture) if no other test did
def test_trial_loaders_draw_per_epoch_from_the_stored_train_clips(synthetic_shards):
    """The sweep's own loaders (training.data) on real built shards: 5 stored clips per train
    video, 2 read per epoch, val videos still left out; eval loaders read every stored clip."""
    from training.data import make_loaders, stream_data

    cfg = ExperimentConfig.from_dict({
        "data": {"clips_per_video": 2, "train_clips_stored": 5}, "model": {"input_size": 32},
        "train": {"batch_size": 4, "val_fraction": 0.5}, "loader": {"threads": 1, "device": "cpu"}})
    data = stream_data(cfg, seed=1, split_dir=synthetic_shards)
    loaders = make_loaders(cfg, "spatial", data, seed=1)
    epochs = []
    for k in range(2):
        loaders["train"].loader.set_epoch(k)
        pairs = [(v, c) for b in loaders["train"] for v, c in zip(b["video"], b["clip"].tolist())]
        assert {v for v, _ in pairs} <= data.train_videos and all(0 <= c < 5 for _, c in pairs)
        counts = {v: sum(1 for w, _ in pairs if w == v) for v, _ in pairs}
        assert max(counts.values()) <= 2
        epochs.append(set(pairs))
    assert epochs[0] != epochs[1]
    val = [(v, c) for b in loaders["val"] for v, c in zip(b["video"], b["clip"].tolist())]
    assert len(val) == 5 * len(data.val_videos)
