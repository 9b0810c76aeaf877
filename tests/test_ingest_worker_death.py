"""#20: an ingest worker killed mid-video (``kill -9``, standing for the OOM killer or a crash).

The video in progress is retried once in a fresh worker, then recorded ``failed`` naming the
worker's death; the rest of its shard is kept. A rerun retries failed videos
(``--retry-failed``, the default) and takes the shard's other videos from its tar;
``--no-retry-failed`` skips them. The kill is real: the worker process that starts the video
named by ``$CROSSROADS_TEST_KILL_VIDEO`` sends itself SIGKILL (``tests/kill_hook/sitecustomize.py``,
which every Ray worker loads at start-up: the hook is the test's, not the product's).
Also: the progress line (videos done, pairs/s, ETA) and ``--dry-run``.
Each Ray run here starts its own local Ray (2 CPUs) and shuts down exactly that one.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil

import polars as pl
import pytest
import ray

from ingest.shard_plan import Options
from ingest.shard_pool import death_reason
from ingest.shard_worker import flow_pairs
from ingest.build_shards import main
from ingest.shard_plan import PARTS_DIRNAME
from core.lock import LOCK_NAME
from shards.tarfiles import iter_shard
from tests.layout import REPO
from tests.shard_samples import ingest_args

KILL_HOOK = REPO / "tests" / "kill_hook"  # its sitecustomize.py: the kill, in every worker
KILL_VIDEO_ENV, KILL_ONCE_ENV = "CROSSROADS_TEST_KILL_VIDEO", "CROSSROADS_TEST_KILL_ONCE"

OPTS = ["--split", "1", "--clips-per-video", "2", "--test-clips", "3", "--short-side", "32",
        "--shard-videos", "4", "--workers", "2", "--flow", "farneback"]
SHARD0 = "train/shard-000000.tar"  # RedLeft g03 c01, BlueLeft g02 c01, RedLeft g03 c02, BlueLeft g03 c01
KILLED = "v_BlueLeft_g02_c01"  # the second video of SHARD0 (plan_shards, seed 0): one before it, two after it
BEFORE = "v_RedLeft_g03_c01"


def files(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.glob("*/shard-*.*"))}


def manifest(out):
    return pl.read_parquet(out / "manifest.parquet").drop("seconds", "host", "node_id")


def keys(tar):
    return [s["__key__"] for s in iter_shard(tar)]


@pytest.fixture(autouse=True)
def own_ray(monkeypatch):
    if ray.is_initialized():  # the kill hook reaches only the workers of a Ray the build starts itself
        pytest.skip("a Ray is already running in this process")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(KILL_HOOK), str(REPO), os.environ.get("PYTHONPATH", "")]))


@pytest.fixture(scope="module")
def reference(small_videos, tmp_path_factory):
    """An uninterrupted build, through the CLI with its progress line (written to a log: every 0.2 s)."""
    out = tmp_path_factory.mktemp("reference") / "split1"
    mp = pytest.MonkeyPatch()
    mp.setattr("core.progress.LOG_INTERVAL", 0.2)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(ingest_args(small_videos, out, OPTS)) == 0
    mp.undo()
    return out, err.getvalue()


@pytest.mark.slow
def test_progress_line_shows_videos_done_pairs_per_s_and_eta(reference):
    out, log = reference
    lines = [l for l in log.splitlines() if l.startswith("split 1 shards")]
    assert lines, log
    last = lines[-1]
    pairs = sum(flow_pairs(r, Options(split=1, clips_per_video=2, test_clips=3))
                for r in pl.read_parquet(out / "manifest.parquet").to_dicts())
    assert "12/12" in last and "video" in last and "pairs/s" in last, last  # video/s or s/video
    assert "<" in last  # tqdm's [elapsed<ETA, ...]
    assert pairs > 0


@pytest.mark.slow
def test_worker_killed_once_retries_the_video_and_gives_the_uninterrupted_result(
        small_videos, reference, tmp_path, monkeypatch, capfd):
    marker = tmp_path / "killed-once"
    monkeypatch.setenv(KILL_VIDEO_ENV, KILLED)
    monkeypatch.setenv(KILL_ONCE_ENV, str(marker))
    out = tmp_path / "split1"
    assert main(ingest_args(small_videos, out, OPTS)) == 0
    assert marker.exists()  # the worker did die on it
    err = capfd.readouterr().err
    assert f"died on BlueLeft/{KILLED}.avi" in err and "retrying it in a fresh worker" in err
    assert files(out) == files(reference[0])
    assert manifest(out).equals(manifest(reference[0]))
    assert not list((out / PARTS_DIRNAME).glob("*.videos")) and not list(out.rglob("*.tmp-*"))


@pytest.mark.slow
def test_worker_killed_twice_fails_the_video_keeps_its_shard_and_reruns_retry_only_it(
        small_videos, reference, tmp_path, monkeypatch, capfd):
    ref, _ = reference
    out = tmp_path / "split1"
    monkeypatch.setenv(KILL_VIDEO_ENV, KILLED)  # every worker that starts it dies
    assert main(ingest_args(small_videos, out, OPTS)) == 0
    err = capfd.readouterr().err
    assert "retrying it in a fresh worker" in err and "recording it as failed" in err
    rows = {r["video"]: r for r in pl.read_parquet(out / "manifest.parquet").to_dicts()}
    assert [v for v, r in rows.items() if r["status"] != "ok"] == [KILLED]
    error = rows[KILLED]["error"]
    assert "worker process died while processing this video, 2 times" in error, error
    assert "ActorDiedError" in error and "SIGKILL" in error and "pid " in error
    assert rows[KILLED]["shard"] is None and rows[KILLED]["clips"] == 0
    # the rest of its shard is there: the video before it (from the dead worker's spool) and after it
    ref_files = files(ref)
    assert [k for k in keys(ref / SHARD0) if not k.startswith(KILLED)] == keys(out / SHARD0)
    assert {k: v for k, v in files(out).items() if not k.startswith(SHARD0[:-4])} == \
        {k: v for k, v in ref_files.items() if not k.startswith(SHARD0[:-4])} != {}
    assert manifest(out).filter(pl.col("video") != KILLED).equals(manifest(ref).filter(pl.col("video") != KILLED))
    assert not list((out / PARTS_DIRNAME).glob("*.videos"))

    # --no-retry-failed: nothing to do (no Ray, no shard or part rewritten), the failed row stays
    built = lambda: {p: p.stat().st_mtime_ns for p in [*out.glob("*/shard-*"), *out.glob(".parts/*-shard-*")]}
    before = built()
    monkeypatch.delenv(KILL_VIDEO_ENV)
    assert main(ingest_args(small_videos, out, OPTS) + ["--no-retry-failed"]) == 0
    assert "11 ok, 1 failed" in capfd.readouterr().out and built() == before

    # the default rerun retries only the failed video: the worker would die on BEFORE, were it redone
    monkeypatch.setenv(KILL_VIDEO_ENV, BEFORE)
    untouched = {p: t for p, t in built().items() if "train/shard-000000" not in p.as_posix()
                 and "train-shard-000000" not in p.name}
    assert main(ingest_args(small_videos, out, OPTS)) == 0
    assert "12 ok, 0 failed" in capfd.readouterr().out
    assert files(out) == ref_files and manifest(out).equals(manifest(ref))
    after = {r["video"]: r for r in pl.read_parquet(out / "manifest.parquet").to_dicts()}
    assert all(after[v]["seconds"] == rows[v]["seconds"] for v in rows if v != KILLED)  # kept rows
    assert {p: p.stat().st_mtime_ns for p in untouched} == untouched  # other shards skipped


@pytest.mark.slow  # the reference build
def test_dry_run_prints_the_work_and_writes_nothing(small_videos, reference, tmp_path, capsys):
    ref, _ = reference
    out = tmp_path / "split1"
    assert main(ingest_args(small_videos, out, OPTS) + ["--dry-run"]) == 0
    text = capsys.readouterr().out
    assert not out.exists()  # neither shards nor a lock
    pairs = sum(flow_pairs(r, Options(split=1, clips_per_video=2, test_clips=3))
                for r in pl.read_parquet(ref / "manifest.parquet").to_dicts())
    assert "videos: 12 (8 train, 4 test)" in text, text
    assert "shards: 3 (2 train, 1 test), at most 4 videos each" in text
    assert f"expected flow pairs: {pairs:,}, for 28 clips" in text  # every frame count read: exact
    line = next(l for l in text.splitlines() if l.startswith("estimated bytes: "))
    measured = sum(p.stat().st_size for p in ref.glob("*/shard-*.*"))
    value, unit = line.split()[2:4]
    estimate = float(value) * {"KiB": 1024, "MiB": 1024 ** 2}[unit]
    assert 0.5 * measured < estimate < 2 * measured, (line, measured)
    assert "3 sample videos" in line and "estimated time: " in text

    # an existing --out: reported, untouched, its lock not taken
    copy = tmp_path / "copy"
    shutil.copytree(ref, copy)
    before = {p: p.stat().st_mtime_ns for p in copy.rglob("*")}
    assert main(ingest_args(small_videos, copy, OPTS) + ["--dry-run"]) == 0
    assert f"already in {copy}: 3 finished shards (skipped)" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in copy.rglob("*")} == before and not (copy / LOCK_NAME).exists()
    # other options into it: the work is printed, and why a run would stop (exit 2)
    other = ingest_args(small_videos, copy, OPTS) + ["--dry-run", "--clips-per-video", "3"]
    assert main(other) == 2
    printed = capsys.readouterr()
    assert "videos: 12" in printed.out and "clips_per_video: was 2, now 3" in printed.err
    assert {p: p.stat().st_mtime_ns for p in copy.rglob("*")} == before


def test_dry_run_with_bad_input_exits_2_with_one_line(small_videos, tmp_path, capsys):
    out = tmp_path / "split1"
    bad = ingest_args(tmp_path / "nowhere", out, OPTS)
    bad[bad.index("--splits") + 1] = str(small_videos / "ucfTrainTestlist")
    assert main(bad + ["--dry-run"]) == 2
    assert "--videos" in capsys.readouterr().err
    lists = tmp_path / "lists"
    shutil.copytree(small_videos / "ucfTrainTestlist", lists)
    with open(lists / "trainlist01.txt", "a") as f:
        f.write("no label, too many words here\r\n")
    bad = ingest_args(small_videos, out, OPTS)
    bad[bad.index("--splits") + 1] = str(lists)
    assert main(bad + ["--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "trainlist01.txt" in err and "Traceback" not in err
    assert not out.exists()


def test_death_reason_is_one_line_naming_pid_exit_and_oom():
    from ray.exceptions import OutOfMemoryError, RayActorError
    died = RayActorError(error_msg=(  # what Ray 2.x says of a SIGKILLed actor worker
        "The actor died unexpectedly before finishing this task.\n\tclass_name: ShardBuilder\n\tpid: 15186\n"
        "The actor is dead because its worker process has died. Worker exit type: SYSTEM_ERROR Worker exit "
        "detail: Worker unexpectedly exits with a connection error code 2. End of file. Some common causes "
        "include: (1) the process was killed by the OOM killer due to high memory usage, (2) ..."))
    reason = death_reason(died)
    assert "\n" not in reason and "pid 15186" in reason and "exit type SYSTEM_ERROR" in reason
    assert "connection error code 2" in reason and "SIGKILL" in reason
    oom = OutOfMemoryError("Task was killed due to the node running low on memory. Memory on the node "
                           "(IP: 10.0.0.1) where the task (actor ID: ab, name=ShardBuilder.build, pid=4242, "
                           "memory used=3.1GB) was running was 7.6GB / 8GB (0.95)")
    assert death_reason(oom).startswith("OutOfMemoryError: pid 4242;") and "low on memory" in death_reason(oom)
