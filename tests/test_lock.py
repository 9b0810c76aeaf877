"""Folder locks on a full disk and lock files left empty or unreadable (issue 31)."""
from __future__ import annotations

import errno
import json
import os

import pytest

from shards.diskspace import is_disk_full
from shards.lock import LOCK_NAME, FolderLocked, folder_lock
from tests.tmpfs import fill, small_tmpfs


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

    from training.sweep import main

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
        from shards.diskspace import full_path
        assert full_path(wrapped) == "/data/results/x.parquet"
    # Tune's summary of failed trials carries the worker's error as text only
    assert is_disk_full(RuntimeError("1 training trial(s) failed: /t: OSError: [Errno 28] No space left on device"))
    assert not is_disk_full(RuntimeError("1 training trial(s) failed: ValueError: bad"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
