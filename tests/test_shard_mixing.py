"""#25 point 1: class-mixed shards and batches.

The official UCF101 lists are sorted by class. Shards cut in list order held one or two classes
each, and the train loader's shuffle buffer (a few shards wide) could not mix classes into a
batch. ``plan_shards`` now cuts a seeded permutation of each subset's videos.
The expectations are exact (hypergeometric): a draw of ``n`` of ``N`` items without replacement
misses class k (``c_k`` items) with probability C(N - c_k, n) / C(N, n).
"""
from __future__ import annotations

import json
from collections import Counter
from math import comb

import pytest

from ingest.shard_plan import OptionsChanged, check_options, plan_shards
from ingest.ucf101 import read_split

PAPER_STORED_CLIPS = 25  # ray_configs/ucf101_split3.yaml data.train_clips_stored: 40 videos a shard


def expected_distinct(class_counts: list[int], n: int) -> float:
    """Expected distinct classes among ``n`` items drawn without replacement."""
    total = sum(class_counts)
    return sum(1 - comb(total - c, n) / comb(total, n) for c in class_counts)


def distinct_vs_random(shards: list[list[int]]) -> tuple[float, float]:
    """(mean distinct labels per shard, the mean a random assignment of the same sizes expects)."""
    counts = list(Counter(label for shard in shards for label in shard).values())
    observed = sum(len(set(s)) for s in shards) / len(shards)
    expected = sum(expected_distinct(counts, len(s)) for s in shards) / len(shards)
    return observed, expected


def test_expected_distinct_matches_known_answers():
    assert expected_distinct([5, 5], 1) == pytest.approx(1.0)
    assert expected_distinct([1, 1, 1], 3) == pytest.approx(3.0)
    # two classes of 2, draw 2: both the same class with probability 2/6
    assert expected_distinct([2, 2], 2) == pytest.approx(2 - 2 / 6)


def test_real_trainlist03_train_shards_mix_classes(shared_data):
    entries = read_split(shared_data / "ucfTrainTestlist", 3, "train")  # no videos: nothing decoded
    assert len(entries) == 9624
    jobs = plan_shards(entries, "train", PAPER_STORED_CLIPS)
    assert len(jobs) == 241 and {len(j.entries) for j in jobs[:-1]} == {40}
    assert sorted(e.path for j in jobs for e in j.entries) == sorted(e.path for e in entries)
    observed, expected = distinct_vs_random([[e.label for e in j.entries] for j in jobs])
    assert observed >= 0.9 * expected, (observed, expected)
    assert expected > 30  # 40 videos of 101 classes

    # the list-order plan of the same sizes (what plan_shards made before) is far below
    lo, old = 0, []
    for job in jobs:
        old.append([e.label for e in entries[lo:lo + len(job.entries)]])
        lo += len(job.entries)
    old_observed, _ = distinct_vs_random(old)
    assert old_observed < 0.1 * expected, old_observed

    # the same seed gives the same shards, another seed others; test shards are permuted too
    assert plan_shards(entries, "train", PAPER_STORED_CLIPS) == jobs
    assert plan_shards(entries, "train", PAPER_STORED_CLIPS, seed=1) != jobs
    test = read_split(shared_data / "ucfTrainTestlist", 3, "test")
    test_jobs = plan_shards(test, "test", 25)
    observed, expected = distinct_vs_random([[e.label for e in j.entries] for j in test_jobs])
    assert observed >= 0.9 * expected


def test_output_built_in_list_order_is_refused_with_overwrite_hint(tmp_path):
    """An options record without ``shard_seed`` is from a list-order build."""
    parts = tmp_path / ".parts"
    parts.mkdir()
    record = {"split": 1, "flow": "dis", "seed": 0, "inputs": {}}
    (parts / "options.json").write_text(json.dumps(record))
    with pytest.raises(OptionsChanged, match=r"list order.*--overwrite"):
        check_options(tmp_path, record | {"shard_seed": 0}, overwrite=False, write=False)
    check_options(tmp_path, record | {"shard_seed": 0}, overwrite=True)  # rebuilding is allowed
    assert json.loads((parts / "options.json").read_text())["shard_seed"] == 0


def _build_train_shards(videos, out, plan):
    """Build the train shards of ``plan`` in this process (build_shard: the Ray actor's work)."""
    from ingest.shard_plan import Options
    from ingest.shard_worker import build_shard
    opts = Options(split=3, clips_per_video=MIX_CLIPS)
    for job in plan:
        build_shard(job, videos, out, opts)
    return out / "train"


def _batch_distinct(shard_folder, epochs: int = 3) -> list[int]:
    from shards.dali import LoaderConfig, make_loader
    loader = make_loader(shard_folder, LoaderConfig(
        stream="spatial", train=True, batch_size=MIX_BATCH, input_size=32, crop_mode="random", flip=False,
        shuffle_buffer=MIX_BUFFER, device="cpu", threads=1))
    return [len(set(batch["label"].tolist())) for _ in range(epochs) for batch in loader]


MIX_CLIPS, MIX_BUFFER, MIX_BATCH = 3, 64, 16


def test_dali_train_batches_mix_classes_like_a_uniform_shuffle(tmp_path):
    """48 class-sorted classes x 3 train groups x 3 clips = 432 samples, 6.75 x the shuffle buffer:
    the distinct classes of a train batch reach >= 90 % of a uniform shuffle's expectation; the
    list-order plan of the same videos, read by the same loader, does not."""
    from ingest.shard_plan import ShardJob
    from ingest.synthetic import generate
    videos = generate(tmp_path / "videos", classes=48, class_list="ucf101", groups=4, clips=1, frames=12,
                      width=48, height=36, progress=False)
    entries = read_split(videos / "ucfTrainTestlist", 3, "train", videos=videos)
    assert [e.label for e in entries] == sorted(e.label for e in entries)  # sorted by class, as UCF101
    samples = MIX_CLIPS * len(entries)
    assert samples >= 6 * MIX_BUFFER
    counts = [MIX_CLIPS * c for c in Counter(e.label for e in entries).values()]
    uniform = expected_distinct(counts, MIX_BATCH)

    plan = plan_shards(entries, "train", MIX_CLIPS)
    mixed = _batch_distinct(_build_train_shards(videos, tmp_path / "mixed", plan))
    assert len(mixed) == 3 * (samples // MIX_BATCH)
    assert sum(mixed) / len(mixed) >= 0.9 * uniform, (sum(mixed) / len(mixed), uniform)

    lo, list_order = 0, []
    for job in plan:
        list_order.append(ShardJob("train", job.index, tuple(entries[lo:lo + len(job.entries)])))
        lo += len(job.entries)
    clustered = _batch_distinct(_build_train_shards(videos, tmp_path / "list_order", list_order))
    assert sum(clustered) / len(clustered) < 0.85 * uniform, (sum(clustered) / len(clustered), uniform)
