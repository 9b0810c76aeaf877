"""A loader's index folder outlives a process killed with SIGKILL; the next loader removes it,
and never a running process's folder (shards.scratch)."""
from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from shards import scratch
from shards.dali import LoaderConfig, make_loader
from tests.shard_samples import noise, write_shards

REPO = Path(__file__).resolve().parents[1]
# a loader reading 2 of 3 stored clips (so it writes its own indexes), then waiting to be killed
KILLED = """
import sys
from pathlib import Path
from shards.dali import LoaderConfig, make_loader
loader = make_loader(sorted(Path(sys.argv[1]).glob('*.tar')), LoaderConfig(batch_size=2, input_size=16, clips_per_video=2))
print(loader._index_dir, flush=True)
sys.stdin.read()
"""


def light_loader(shards: Path):
    return make_loader(sorted(shards.glob("*.tar")), LoaderConfig(batch_size=2, input_size=16, clips_per_video=2))


def test_a_killed_loaders_index_folder_is_removed_by_the_next_loader(tmp_path, monkeypatch):
    shards = write_shards(tmp_path / "shards", 2, 2, 3, noise(32, 32))
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    env = {**os.environ, "TMPDIR": str(temp), "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", KILLED, str(shards)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    left = Path(child.stdout.readline().strip())
    assert left.parent == temp and any(left.rglob("*")), left  # it wrote its indexes
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert left.is_dir()  # no finalizer ran
    stranger = temp / f"{scratch.PREFIX}leftover"  # no process id in the name: whose is unknown
    stranger.mkdir()

    loader = light_loader(shards)
    ours = loader._index_dir
    assert not left.exists() and stranger.is_dir()
    assert ours.name.startswith(f"{scratch.PREFIX}{os.getpid()}-")
    assert scratch.remove_orphans(temp) == [] and ours.is_dir()  # a running process's folder stays
    assert sum(len(batch["video"]) for batch in loader) == 2 * 2 * 2  # shards x videos x clips read
    del loader
    gc.collect()
    assert not ours.exists()  # the loader's own cleanup, as before
