"""Progress in logs (core.progress) and the ingest's pairs/s count."""
from __future__ import annotations

import io
import time

from core.progress import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_in_a_log_a_short_loop_prints_nothing_and_a_long_one_whole_lines():
    log = io.StringIO()
    for _ in progress(range(1000), file=log, desc="fast", interval=30):
        pass
    assert log.getvalue() == ""  # shorter than the interval: no line at all

    log = io.StringIO()
    for _ in progress(range(12), file=log, desc="slow", interval=0.05, unit="video"):
        time.sleep(0.02)
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and log.getvalue().endswith("\n")
    assert 2 <= len(lines) <= 12, lines  # at most about one line per interval, not one per item
    assert lines[-1].startswith("slow: 100% 12/12") and "video/s" in lines[-1]


def test_disable_is_honoured_and_a_terminal_gets_a_live_bar():
    log = io.StringIO()
    for _ in progress(range(3), file=log, disable=True):
        time.sleep(0.01)
    assert log.getvalue() == ""
    tty = Terminal()
    for _ in progress(range(3), file=tty, desc="live", mininterval=0):
        pass
    assert "\r" in tty.getvalue() and "live" in tty.getvalue()


def test_ingest_counts_the_flow_pairs_it_computed(synthetic_videos, tmp_path, monkeypatch):
    from ingest import shard_worker
    from ingest.shard_plan import Options, plan_shards
    from ingest.ucf101 import read_split

    computed = []
    real = shard_worker.get_backend

    def counting_backend(name, **options):
        backend = real(name, **options)
        fields = backend.fields

        def counted(frames, starts):
            computed.append(len(starts))
            return fields(frames, starts)
        backend.fields = counted
        return backend
    monkeypatch.setattr(shard_worker, "get_backend", counting_backend)
    lists = synthetic_videos / "ucfTrainTestlist"
    for subset in ("train", "test"):
        opts = Options(split=1, clips_per_video=3, test_clips=5, short_side=48)
        entries = read_split(lists, 1, subset, videos=synthetic_videos)[:1]
        job = plan_shards(entries, subset, opts.clips(subset))[0]
        computed.clear()
        rows = shard_worker.build_shard(job, synthetic_videos, tmp_path, opts)
        assert sum(shard_worker.flow_pairs(row, opts) for row in rows) == sum(computed) > 0
