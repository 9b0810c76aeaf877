"""An ingest stopped by a signal or by a full disk (issue 31): real processes, a real tmpfs.

SIGTERM (what a scheduler sends) stops it at once: workers killed, Ray shut down, the lock
released, exit 143, one line saying what finished and the command that continues. A disk that
fills up is named with its free space and the space the plan needs, exit 1; a rerun after
freeing space finishes the shards.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys

import polars as pl
import pytest

from ingest.build_shards import main
from ingest.shard_plan import PARTS_DIRNAME
from core.lock import LOCK_NAME
from shards.tarfiles import shard_problem
from tests.processes import signal_when
from tests.shard_samples import ingest_args
from tests.layout import REPO
from tests.tmpfs import fill, small_tmpfs

OPTS = ["--split", "1", "--clips-per-video", "2", "--test-clips", "3", "--short-side", "32",
        "--shard-videos", "4", "--workers", "1", "--flow", "farneback"]


def test_a_disk_already_full_is_named_and_leaves_no_lock(small_videos, tmp_path, capsys):
    with small_tmpfs(tmp_path / "fs", "256k") as fs:
        fill(fs)
        out = fs / "split1"
        assert main(ingest_args(small_videos, out, OPTS)) == 1  # not 2: the command line was fine
        err = capsys.readouterr().err
        assert f"error: disk full: {out} has 0 B free, the plan (all shards of this split) needs about" in err
        assert "Traceback" not in err and "\x1b[" not in err
        assert not (out / LOCK_NAME).exists() and not list(out.rglob("*.tmp-*"))


@pytest.mark.slow
def test_an_ingest_that_fills_its_disk_stops_and_a_rerun_with_space_finishes(small_videos, tmp_path, capsys):
    with small_tmpfs(tmp_path / "fs", "96k") as fs:
        out = fs / "split1"
        assert main(ingest_args(small_videos, out, OPTS)) == 1
        err = capsys.readouterr().err
        assert f"error: disk full: {out} has " in err and "needs about" in err and "Traceback" not in err
        # nothing half-written is taken as complete: every shard there is whole
        assert all(shard_problem(tar) is None for tar in out.glob("*/shard-*.tar"))
        assert not (out / "manifest.parquet").exists() and not (out / LOCK_NAME).exists()
        subprocess.run(["mount", "-o", "remount,size=4m", str(fs)], check=True)
        assert main(ingest_args(small_videos, out, OPTS)) == 0
        assert pl.read_parquet(out / "manifest.parquet")["status"].to_list() == ["ok"] * 12
        assert all(shard_problem(tar) is None for tar in out.glob("*/shard-*.tar"))


@pytest.mark.slow
def test_sigterm_stops_an_ingest_at_once_and_the_printed_command_continues(small_videos, tmp_path):
    out = tmp_path / "split1"
    command = [sys.executable, "-m", "ingest.build_shards", *ingest_args(small_videos, out, OPTS)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    # once a worker is on a video
    stopped = signal_when(proc, lambda: bool(list((out / PARTS_DIRNAME).glob("*.videos/*.started"))),
                          signal.SIGTERM, wait=120, stop_within=60)
    assert proc.returncode == 143, stopped.stderr[-3000:]
    lines = [line for line in stopped.stderr.splitlines() if line.startswith("ingest stopped by SIGTERM")]
    assert len(lines) == 1 and "shards finished (kept); continue with: python -m ingest.build_shards " in lines[0]
    assert "Traceback" not in stopped.stderr and stopped.seconds < 30, (stopped.seconds, stopped.stderr[-3000:])
    assert not (out / LOCK_NAME).exists()
    assert stopped.left == []  # workers and the local Ray are gone
    continued = shlex.split(lines[0].split("continue with: ", 1)[1])
    assert continued[:3] == ["python", "-m", "ingest.build_shards"]
    done = subprocess.run([sys.executable, *continued[1:]], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert pl.read_parquet(out / "manifest.parquet")["status"].to_list() == ["ok"] * 12
