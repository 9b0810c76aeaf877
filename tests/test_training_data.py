"""Stream data: validation carved out by whole groups, batch filtering by video, real loaders."""
from __future__ import annotations

import polars as pl
import pytest
import torch

from core.config import ExperimentConfig
from training.data import DataError, VideoSubset, class_names, make_loaders, read_manifest, stream_data, val_groups


def manifest(groups=(1, 2, 3, 4, 5)):
    rows = [dict(subset="train", video=f"v_C{c}_g{g:02d}", group=g, label=c, class_name=f"C{c}",
                 shard=f"train/shard-{g:06d}.tar", status="ok") for g in groups for c in range(3)]
    return pl.DataFrame(rows)


def test_val_groups_are_whole_groups_drawn_by_seed():
    m = manifest()
    assert val_groups(m, 0.0, 0) == set()
    picked = val_groups(m, 0.4, 0)
    assert len(picked) == 2 and picked <= {1, 2, 3, 4, 5}
    assert val_groups(m, 0.4, 0) == picked  # same seed, same groups
    assert any(val_groups(m, 0.4, s) != picked for s in range(1, 10))
    assert len(val_groups(m, 0.01, 0)) == 1 and len(val_groups(m, 0.99, 0)) == 4  # never all
    with pytest.raises(DataError, match="at least two train groups"):
        val_groups(manifest(groups=(7,)), 0.2, 0)


def test_class_names_in_label_order():
    assert class_names(manifest()) == ["C0", "C1", "C2"]
    broken = manifest().with_columns(pl.when(pl.col("label") == 1).then(5).otherwise(pl.col("label")).alias("label"))
    with pytest.raises(DataError, match="one class name per label"):
        class_names(broken)


def test_video_subset_keeps_or_drops_rows():
    batches = [{"x": torch.arange(4.0)[:, None], "label": torch.tensor([0, 1, 2, 3]),
                "video": ["a", "b", "a", "c"], "clip": torch.tensor([0, 0, 1, 0])},
               {"x": torch.zeros(1, 1), "label": torch.tensor([9]), "video": ["c"], "clip": torch.tensor([0])}]
    kept = list(VideoSubset(batches, {"a"}))
    assert len(kept) == 1 and kept[0]["video"] == ["a", "a"]
    assert kept[0]["x"].flatten().tolist() == [0.0, 2.0] and kept[0]["clip"].tolist() == [0, 1]
    dropped = list(VideoSubset(batches, {"a"}, keep=False))
    assert [b["video"] for b in dropped] == [["b", "c"], ["c"]]
    assert dropped[1] is batches[1]  # untouched batches pass through as they are


def test_missing_manifest_names_the_folder(tmp_path):
    with pytest.raises(DataError, match="no manifest; build the shards first"):
        read_manifest(tmp_path)


def test_loaders_on_synthetic_shards_never_mix_train_and_val_groups(synthetic_shards):
    cfg = ExperimentConfig.from_dict({"model": {"input_size": 32}, "train": {"batch_size": 16, "val_fraction": 0.5},
                                      "eval": {"batch_size": 32}, "loader": {"threads": 1, "device": "cpu"}})
    data = stream_data(cfg, seed=1, split_dir=synthetic_shards)
    m = read_manifest(synthetic_shards)
    group = dict(zip(m["video"], m["group"]))
    assert data.train_videos and data.val_videos and not data.train_videos & data.val_videos
    assert not {group[v] for v in data.train_videos} & {group[v] for v in data.val_videos}
    assert len(data.classes) == 8
    loaders = make_loaders(cfg, "temporal", data, seed=1)
    train_seen = {v for batch in loaders["train"] for v in batch["video"]}
    val_seen = {v for batch in loaders["val"] for v in batch["video"]}
    test_batch = next(iter(loaders["test"]))
    assert train_seen <= data.train_videos and val_seen == data.val_videos
    assert test_batch["x"].shape[1:] == (20, 32, 32)


def test_train_subset_resumed_at_epoch_k_reads_what_an_uninterrupted_one_read(synthetic_shards):
    """The train loader of a run with validation videos is a VideoSubset: set_epoch must reach
    the DALI loader, or a retried trial (fresh loaders, resumed at epoch k) reads epoch 0."""
    cfg = ExperimentConfig.from_dict({"model": {"input_size": 32}, "train": {"batch_size": 16, "val_fraction": 0.5},
                                      "eval": {"batch_size": 32}, "loader": {"threads": 1, "device": "cpu"}})
    data = stream_data(cfg, seed=1, split_dir=synthetic_shards)

    def epoch(loader, k):
        loader.set_epoch(k)
        return [(b["video"], b["clip"].tolist(), b["x"]) for b in loader]
    straight = make_loaders(cfg, "spatial", data, seed=1)["train"]
    assert isinstance(straight, VideoSubset)
    first, second = epoch(straight, 0), epoch(straight, 1)
    resumed = epoch(make_loaders(cfg, "spatial", data, seed=1)["train"], 1)
    assert [b[:2] for b in resumed] == [b[:2] for b in second] != [b[:2] for b in first]
    assert all(torch.equal(a[2], b[2]) for a, b in zip(resumed, second))


@pytest.mark.parametrize("fit_on", ["heldout", "train"])
def test_train_scores_read_only_the_videos_a_fusion_fits_on(synthetic_shards, fit_on):
    """fusion.fit_on heldout: the SVM fit reads the held-out videos' scores only, so only their
    clips are scored (every clip of each); fit_on train: every train-list clip (issue 26)."""
    from training.data import train_eval_loader
    cfg = ExperimentConfig.from_dict({"model": {"input_size": 32}, "train": {"val_fraction": 0.5},
                                      "fusion": {"fit_on": fit_on},
                                      "eval": {"batch_size": 32}, "loader": {"threads": 1, "device": "cpu"}})
    data = stream_data(cfg, seed=1, split_dir=synthetic_shards)
    clips = [(v, int(c)) for batch in train_eval_loader(cfg, "spatial", data)
             for v, c in zip(batch["video"], batch["clip"])]
    wanted = data.val_videos if fit_on == "heldout" else data.train_videos | data.val_videos
    assert {v for v, _ in clips} == wanted and len(clips) == len(set(clips)) == 5 * len(wanted)


def test_validation_protocol_reads_evenly_spaced_clips():
    from training.data import even_clips
    assert even_clips(25, 5) == [2, 7, 12, 17, 22] and even_clips(5, 5) == [0, 1, 2, 3, 4]
    assert even_clips(3, None) == [0, 1, 2] and even_clips(4, 1) == [2]
    batch = {"x": torch.arange(4.0)[:, None], "video": ["a", "a", "b", "c"], "clip": torch.tensor([0, 2, 2, 2])}
    kept = list(VideoSubset([batch], {"a", "b"}, clips={"a": {2}, "b": {0}}))
    assert kept[0]["video"] == ["a"] and kept[0]["x"].flatten().tolist() == [1.0]


@pytest.mark.parametrize("stream", ["spatial", "temporal"])
def test_validation_loader_decodes_only_validation_samples(synthetic_shards, stream):
    """The validation loader reads the held-out videos' samples alone (issue 26): its DALI reader
    gives exactly the validation protocol's clips, no other sample of their shards, and the rows
    (video, clip, label, input) are those the old read-everything-then-filter loader kept."""
    from shards.dali import READER, make_loader
    from training.data import loader_config, val_clips, val_loader
    cfg = ExperimentConfig.from_dict({"model": {"input_size": 32}, "train": {"val_fraction": 0.5},
                                      "eval": {"batch_size": 8, "val_clips": 2},
                                      "loader": {"threads": 1, "device": "cpu"}})
    data = stream_data(cfg, seed=1, split_dir=synthetic_shards)

    def decoded(loader):  # samples the DALI reader hands to the decoder each pass
        return sum(pipe.reader_meta(READER)["epoch_size"] for pipe in loader._iterator._pipes)

    def rows(loader):
        return [(v, int(c), int(label), x) for b in loader
                for v, c, label, x in zip(b["video"], b["clip"], b["label"], b["x"])]
    new = val_loader(cfg, stream, data)
    old = make_loader(data.val_shards, loader_config(cfg, stream, train=False))
    before = VideoSubset(old, data.val_videos, clips=val_clips(cfg, data))
    assert decoded(new) == 2 * len(data.val_videos) < decoded(old)  # the shards also hold train videos
    got, want = rows(new), rows(before)
    assert [r[:3] for r in got] == [r[:3] for r in want] and len(got) == 2 * len(data.val_videos)
    assert all(torch.equal(a[3], b[3]) for a, b in zip(got, want))
    assert [r[:3] for r in rows(new)] == [r[:3] for r in got]  # the same clips every pass
