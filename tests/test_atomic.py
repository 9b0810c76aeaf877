"""core.atomic, the one atomic writer: a reader sees the old file or the new one, never part of
one, whether the writer fails, is killed mid-write, or finishes; ``durable`` decides the fsyncs."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from core.atomic import atomic_file, write_text_atomic
from tests.layout import REPO


def test_a_finished_block_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "deep" / "table.txt"  # missing folders are made
    write_text_atomic(path, "old")
    with atomic_file(path) as tmp:
        assert tmp.parent == path.parent and tmp.name.startswith("table.txt.tmp-")
        tmp.write_text("new")
        assert path.read_text() == "old"  # not visible before the block ends
    assert path.read_text() == "new" and os.listdir(path.parent) == ["table.txt"]


def test_a_failing_block_keeps_the_old_file(tmp_path):
    path = tmp_path / "table.txt"
    write_text_atomic(path, "old")
    with pytest.raises(RuntimeError), atomic_file(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["table.txt"]


@pytest.mark.parametrize("durable", [True, False])
def test_fsyncs_only_when_durable(tmp_path, monkeypatch, durable):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real(fd))
    write_text_atomic(tmp_path / "a.txt", "x", durable=durable)
    assert (tmp_path / "a.txt").read_text() == "x"
    assert len(synced) == (2 if durable else 0)  # the file, then its folder (the rename)


def test_a_writer_killed_mid_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "big.bin"
    write_text_atomic(path, "old")
    writer = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom core.atomic import atomic_file\n"
         "with atomic_file(sys.argv[1]) as tmp:\n"
         "    f = open(tmp, 'wb'); f.write(b'x' * 1000); f.flush(); print('writing', flush=True)\n"
         "    time.sleep(60)\n", str(path)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    assert path.read_text() == "old"
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left[0] == "big.bin" and len(left) == 2 and left[1].startswith("big.bin.tmp-")  # no reader globs it
