"""Folder locks on a full disk and lock files left empty or unreadable (issue 31)."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.diskspace import is_disk_full
from core.lock import LOCK_NAME, FolderLocked, folder_lock, lock_problem
from tests.tmpfs import fill, small_tmpfs

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("content", [b"", b"{\"host\": \"x\"", b"\xff\xfe garbage", b"[]"])
def test_an_empty_or_unreadable_lock_is_taken_over_with_a_warning(tmp_path, content):
    (tmp_path / LOCK_NAME).write_bytes(content)
    with pytest.warns(UserWarning, match="empty or unreadable"):
        with folder_lock(tmp_path, what="sweep") as path:
            holder = json.loads(path.read_text())
            assert holder["pid"] == os.getpid() and holder["what"] == "sweep"
    assert not (tmp_path / LOCK_NAME).exists() and os.listdir(tmp_path) == []


def test_a_live_holder_still_refuses(tmp_path):
    with folder_lock(tmp_path, what="ingest"):
        with pytest.raises(FolderLocked, match=f"ingest pid {os.getpid()}"):
            with folder_lock(tmp_path):
                pass


def test_a_full_disk_leaves_no_lock_and_freeing_space_is_enough(tmp_path):
    with small_tmpfs(tmp_path / "fs", "1m") as fs:
        out = fs / "out"
        out.mkdir()
        filler = fill(fs)
        with pytest.raises(OSError) as caught:
            with folder_lock(out):
                pass
        assert caught.value.errno == errno.ENOSPC and is_disk_full(caught.value)
        assert os.listdir(out) == []  # no empty .lock, no temporary file
        filler.unlink()
        with folder_lock(out, what="ingest"):
            assert (out / LOCK_NAME).is_file()
        assert os.listdir(out) == []


def test_a_sweep_on_a_full_disk_exits_1_naming_the_root(tmp_path, capsys):
    """The sweep's root lock on a real full filesystem: named, exit 1, and no lock left behind."""
    import yaml

    from pipeline.sweep import main

    with small_tmpfs(tmp_path / "fs", "1m") as fs:
        root = fs / "exp"
        config = tmp_path / "full.yaml"
        config.write_text(yaml.safe_dump({"experiment": {"name": "full", "root": str(root)}, "stages": ["report"]}))
        fill(fs)
        assert main(["--config", str(config)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: disk full: {root} has 0 B free") and "Traceback" not in err
        assert not (root / LOCK_NAME).exists()


def test_disk_full_is_found_inside_ray_and_tune_errors():
    inner = OSError(errno.ENOSPC, "No space left on device", "/data/results/x.parquet")
    try:
        try:
            raise inner
        except OSError as exc:
            raise RuntimeError("task failed") from exc
    except RuntimeError as wrapped:
        assert is_disk_full(wrapped)
        from core.diskspace import full_path
        assert full_path(wrapped) == "/data/results/x.parquet"
    # Tune's summary of failed trials carries the worker's error as text only
    assert is_disk_full(RuntimeError("1 training trial(s) failed: /t: OSError: [Errno 28] No space left on device"))
    assert not is_disk_full(RuntimeError("1 training trial(s) failed: ValueError: bad"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))


# --- a lock of another host: its pid cannot be checked, its heartbeat (the file's mtime) can ---
def other_hosts_lock(folder, *, age: float, heartbeat: float | None = 30.0, pid: int = 4242) -> dict:
    """Write the lock file a run on host ``node-7`` would leave, its last heartbeat ``age`` s ago."""
    holder = {"host": "node-7", "pid": pid, "started": time.time() - age - 60, "token": "t" * 32, "what": "ingest"}
    if heartbeat is not None:
        holder["heartbeat_s"] = heartbeat
    path = folder / LOCK_NAME
    path.write_text(json.dumps(holder))
    os.utime(path, (time.time() - age, time.time() - age))
    return holder


def test_a_lock_of_another_host_whose_heartbeat_stopped_is_taken_over_naming_host_pid_and_age(tmp_path):
    other_hosts_lock(tmp_path, age=3600)
    assert lock_problem(tmp_path) is None  # the sweep's preflight does not refuse it either
    with pytest.warns(UserWarning, match=r"taking over the lock of ingest pid 4242 on host node-7 .*: its host "
                                         r"node-7 is not this one .* heartbeat stopped 60 min ago \(more than 300 s"):
        with folder_lock(tmp_path, what="sweep") as path:
            assert json.loads(path.read_text())["pid"] == os.getpid()
    assert os.listdir(tmp_path) == []


def test_a_lock_of_another_host_with_a_recent_heartbeat_or_none_is_refused(tmp_path):
    other_hosts_lock(tmp_path, age=20)
    with pytest.raises(FolderLocked, match=r"ingest pid 4242 on host node-7 .*heartbeat is 20 s old: a lock of "
                                           r"another host is taken over once its heartbeat is older than 300 s"):
        with folder_lock(tmp_path):
            pass
    assert "pid 4242 on host node-7" in lock_problem(tmp_path)
    # written before heartbeats (no heartbeat_s): never guessed at, however old
    other_hosts_lock(tmp_path, age=30 * 86400, heartbeat=None)
    with pytest.raises(FolderLocked, match="pid 4242 on host node-7"):
        with folder_lock(tmp_path):
            pass
    # a holder that beats every 10 min is not given up after 5: 4 of its beats must be missed
    other_hosts_lock(tmp_path, age=1800, heartbeat=600)
    with pytest.raises(FolderLocked, match="older than 2400 s"):
        with folder_lock(tmp_path):
            pass


def test_a_live_holder_keeps_its_lock_fresh_and_once_killed_another_host_takes_it_over(tmp_path, monkeypatch):
    """A real process holds the lock, beating every 0.2 s; its lock file is made to name another
    host (a worker there): alive it is refused, killed (-9) it is taken over once 1 s stale."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom core.lock import folder_lock\n"
         "with folder_lock(sys.argv[1], what='ingest'):\n    print('held', flush=True)\n    time.sleep(120)\n",
         str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "CROSSROADS_LOCK_HEARTBEAT_S": "0.2"})
    try:
        assert holder.stdout.readline() == "held\n"
        path = tmp_path / LOCK_NAME
        lock = json.loads(path.read_text())
        assert lock["pid"] == holder.pid and lock["heartbeat_s"] == 0.2
        path.write_text(json.dumps({**lock, "host": "node-7"}))  # as its worker on node-7 wrote it
        os.utime(path, (time.time() - 3600, time.time() - 3600))
        time.sleep(1)
        assert time.time() - path.stat().st_mtime < 1  # the holder's heartbeat refreshed it
        monkeypatch.setenv("CROSSROADS_LOCK_STALE_S", "1")
        with pytest.raises(FolderLocked, match=f"ingest pid {holder.pid} on host node-7"):
            with folder_lock(tmp_path):
                pass
        holder.kill()
        holder.wait()
        time.sleep(1.5)
        with pytest.warns(UserWarning, match=rf"lock of ingest pid {holder.pid} on host node-7 .*heartbeat "
                                             r"stopped [12] s ago \(more than 1 s"):
            with folder_lock(tmp_path, what="sweep"):
                assert json.loads(path.read_text())["pid"] == os.getpid()
    finally:
        holder.kill()
        holder.wait()
