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
