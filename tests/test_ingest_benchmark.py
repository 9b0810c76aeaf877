"""benchmarks.ingest --json (issue 20): a tiny run writes every goal's figure as one JSON object."""
import json

import pytest

from benchmarks import ingest as bench

KEYS = ("stage_sum_ratio", "baseline_speedup", "worker_scaling", "rss_ratio", "contention_slowdown")


@pytest.mark.slow  # a whole (tiny) benchmark run
def test_tiny_run_writes_the_goal_keys(shared_data, tmp_path):
    out = tmp_path / "ingest.json"
    bench.main(["--quick", "--repeat", "1", "--clips", "ApplyEyeMakeup", "--skip", "flow_only", "scaling",
                "contention", "--long-seconds", "2", "--short-seconds", "1", "--json", str(out)])
    result = json.loads(out.read_text())
    assert all(key in result for key in KEYS)
    assert result["stage_sum_ratio"] > 0 and result["baseline_speedup"] > 0 and result["rss_ratio"] > 0
    assert result["worker_scaling"] is None and result["contention_slowdown"] is None  # skipped
    parts = result["details"]["stage_sum"]["fast"]
    assert {"decode", "flow", "encode", "bound_wall_s", "ingest_wall_s"} <= set(parts)
    assert result["details"]["rss"]["long"]["frames"] == 50 and result["details"]["rss"]["short"]["frames"] == 25


def test_busy_loops_are_stopped():
    with bench.BusyLoops(2) as busy:
        assert all(p.poll() is None for p in busy.procs)
    assert all(p.poll() is not None for p in busy.procs)
