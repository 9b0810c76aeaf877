"""A build killed with SIGKILL mid-run and rerun ends with exactly the shards and manifest of
an uninterrupted run (the ``synthetic_shards`` fixture, built with the same options)."""
import os
import signal
import subprocess
import sys
import time

import polars as pl
import pytest

from ingest.build_shards import build_shards
from ingest.shard_plan import PARTS_DIRNAME
from tests.layout import REPO


def shard_files(split_dir):
    return {p.relative_to(split_dir).as_posix(): p.read_bytes()
            for p in sorted(split_dir.glob("*/shard-*.*"))}


def manifest(split_dir):
    return pl.read_parquet(split_dir / "manifest.parquet").drop("seconds", "host", "node_id")  # run facts


@pytest.mark.slow
def test_rerun_after_kill_9_gives_the_uninterrupted_result(synthetic_videos, synthetic_shards, tmp_path):
    out = tmp_path / "split1"
    lists = synthetic_videos / "ucfTrainTestlist"
    cmd = [sys.executable, "-m", "ingest.build_shards", "--videos", str(synthetic_videos),
           "--splits", str(lists), "--split", "1", "--out", str(out), "--clips-per-video", "5",
           "--test-clips", "5", "--short-side", "64", "--workers", "1"]
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = out / PARTS_DIRNAME
    deadline = time.monotonic() + 120
    while len(list(parts.glob("*.parquet"))) < 3:  # a few shards done, most not
        assert proc.poll() is None and time.monotonic() < deadline, "the build ended before the kill"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started
    proc.wait()
    while True:  # wait until every process of that group is gone
        try:
            os.killpg(proc.pid, 0)
            time.sleep(0.1)
        except ProcessLookupError:
            break
    done = len(list(parts.glob("*.parquet")))
    assert not (out / "manifest.parquet").exists() and done < 16

    summary = build_shards(synthetic_videos, lists, 1, out, clips_per_video=5, test_clips=5,
                           short_side=64, workers=2, progress=False)
    assert (summary.ok, summary.failed, summary.shards) == (48, 0, 16)
    assert shard_files(out) == shard_files(synthetic_shards)
    assert manifest(out).equals(manifest(synthetic_shards))
    assert not list(out.rglob("*.tmp-*"))
