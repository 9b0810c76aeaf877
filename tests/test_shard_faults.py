"""Damaged shards (#15.9): a missing .idx, a truncated tar, a sample missing a component or an
index of another tar are refused when a loader is built (before any batch), naming the shard,
the sample where known, and the fix; a rerun of the ingest rebuilds exactly those shards.
Each fault is injected into a copy of the real built synthetic shards."""
from __future__ import annotations

import shutil

import pytest

from shards.dali import LoaderConfig, make_loader
from shards.format import ShardFormatError
from shards.inspect import inspect_split
from shards.tarfiles import (REBUILD_HINT, index_path, iter_shard, read_index_samples, shard_problem,
                             write_shard)

CFG = LoaderConfig(stream="temporal", batch_size=4, input_size=56)


def damage(split_dir):
    """Four faults in four train shards of ``split_dir``; returns {shard name: expected words}."""
    train = split_dir / "train"
    index_path(train / "shard-000000.tar").unlink()  # index lost

    truncated = train / "shard-000001.tar"  # cut in the middle of its data
    samples = read_index_samples(truncated)
    size = truncated.stat().st_size // 2
    first_cut = next(key for key, parts in samples if max(o + n for o, n in parts.values()) > size)
    with open(truncated, "r+b") as f:
        f.truncate(size)

    lacking = train / "shard-000002.tar"  # a sample without its flow (tar and index agree)
    raw = [{k: v for k, v in s.items() if k != "__shard__"} for s in iter_shard(lacking)]
    del raw[1]["flow.jpg"]
    write_shard(lacking, raw)

    swapped = train / "shard-000003.tar"  # an index of another shard beside it
    shutil.copy(index_path(train / "shard-000004.tar"), index_path(swapped))
    return {"shard-000000.tar": ["its DALI index shard-000000.idx is missing"],
            "shard-000001.tar": ["truncated", f"sample {first_cut!r}"],
            "shard-000002.tar": [f"sample {raw[1]['__key__']!r} lacks ['flow.jpg']"],
            "shard-000003.tar": ["shard-000003.idx does not match the tar"]}


@pytest.fixture
def damaged(synthetic_shards, tmp_path):
    copy = tmp_path / "split1"
    shutil.copytree(synthetic_shards, copy)
    return copy, damage(copy)


@pytest.mark.slow  # builds the shared synthetic shards (session fixture) if no other test did
def test_each_fault_is_refused_before_reading_naming_shard_sample_and_fix(damaged):
    split_dir, faults = damaged
    train = split_dir / "train"
    with pytest.raises(ShardFormatError, match="shard-000000.idx is missing"):
        make_loader(train, CFG)  # a folder: a tar without its index is refused, not skipped
    for name, words in faults.items():
        with pytest.raises(ShardFormatError) as err:
            make_loader([train / name], CFG)
        message = str(err.value)
        assert str(train / name) in message and REBUILD_HINT in message
        assert all(w in message for w in words), message
        assert all(w in shard_problem(train / name) for w in words)
    sound = sorted(p for p in train.glob("*.tar") if p.name not in faults)
    assert all(shard_problem(p) is None for p in sound)
    assert len(list(make_loader(sound, CFG))) > 0
    errors = inspect_split(split_dir).errors
    assert all(any(str(train / name) in e for e in errors) for name in faults)


@pytest.mark.slow  # a Ray ingest run
def test_ingest_rerun_rebuilds_exactly_the_damaged_shards(synthetic_videos, synthetic_shards, tmp_path):
    from ingest.build_shards import build_shards

    copy = tmp_path / "split1"
    shutil.copytree(synthetic_shards, copy)
    faults = damage(copy)
    untouched = {p.name: p.stat().st_mtime_ns for p in (copy / "train").glob("*.tar") if p.name not in faults}
    build_shards(synthetic_videos, synthetic_videos / "ucfTrainTestlist", 1, copy, clips_per_video=5,
                 test_clips=5, short_side=64, workers=2, progress=False, strict=True)
    for subset in ("train", "test"):
        for tar in sorted((synthetic_shards / subset).glob("*.tar")):
            rebuilt = copy / subset / tar.name
            assert rebuilt.read_bytes() == tar.read_bytes(), rebuilt
            assert index_path(rebuilt).read_bytes() == index_path(tar).read_bytes()
    assert {p.name: p.stat().st_mtime_ns for p in (copy / "train").glob("*.tar")
            if p.name not in faults} == untouched  # sound shards were skipped
