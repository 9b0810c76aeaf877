"""The results store: round trips, newest row per key, schema errors, concurrency, crashes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.results import KEYS, SCHEMAS, ResultsSchemaError, read_table, write_rows
from tests.result_files import FINISHED, accuracy_row, irof_rows
from tests.layout import REPO




def test_round_trip_keeps_values_and_types(tmp_path):
    rows = [accuracy_row(run=r, video_accuracy=60.0 + r) for r in (1, 2)]
    rows.append(accuracy_row(stream="fusion", fusion="mean", latency_ms=3.5))
    path = write_rows(tmp_path, "accuracy", rows, partition="spatial/run1/step0")
    assert path == tmp_path / "accuracy" / "spatial" / "run1" / "step0.parquet"
    table = read_table(tmp_path, "accuracy").sort("stream", "run")
    assert table.columns == SCHEMAS["accuracy"].names
    assert table["video_accuracy"].to_list() == [60.0, 61.0, 62.0]
    assert table["fusion"].to_list() == ["mean", None, None]
    assert table["latency_ms"].to_list() == [3.5, None, None]
    assert table["finished_at"].to_list() == [FINISHED] * 3
    assert table.schema["run"] == pl.Int64 and table["written_at"].null_count() == 0
    # A Polars frame is accepted too, and rewriting a partition replaces it.
    write_rows(tmp_path, "accuracy", pl.DataFrame(rows[:1]), partition="spatial/run1/step0")
    assert read_table(tmp_path, "accuracy")["video_accuracy"].to_list() == [61.0]
    assert pq.read_table(path).num_rows == 1


def test_empty_table_has_the_schema(tmp_path):
    table = read_table(tmp_path, "irof")
    assert table.height == 0 and table.columns == SCHEMAS["irof"].names


def test_duplicate_keys_keep_the_newest_row(tmp_path):
    write_rows(tmp_path, "accuracy", [accuracy_row(video_accuracy=10.0), accuracy_row(run=2)],
               partition="first")
    write_rows(tmp_path, "accuracy", [accuracy_row(video_accuracy=20.0)], partition="second")
    table = read_table(tmp_path, "accuracy").sort("run")
    assert table["run"].to_list() == [1, 2]
    assert table["video_accuracy"].to_list() == [20.0, 60.0]
    # Within one file the later row wins; a null `fusion` key equals another null.
    write_rows(tmp_path, "accuracy", [accuracy_row(video_accuracy=30.0), accuracy_row(video_accuracy=40.0)],
               partition="third")
    assert read_table(tmp_path, "accuracy").filter(pl.col("run") == 1)["video_accuracy"].to_list() == [40.0]
    # Rows differing in any key column are all kept.
    write_rows(tmp_path, "accuracy", [accuracy_row(stream="fusion", fusion=f) for f in ("mean", "svm_softmax")],
               partition="fusion")
    assert read_table(tmp_path, "accuracy").height == 4
    assert set(KEYS["accuracy"]) <= set(SCHEMAS["accuracy"].names)


def test_a_file_of_another_schema_is_an_error_naming_it(tmp_path):
    write_rows(tmp_path, "irof", irof_rows(1, 0, 3), partition="temporal/run1/step0")
    stray = tmp_path / "irof" / "temporal" / "stray.parquet"
    pq.write_table(pa.table({"video": ["v0"], "irof": [0.5]}), stray)
    with pytest.raises(ResultsSchemaError, match=str(stray)):
        read_table(tmp_path, "irof")
    stray.write_bytes(b"not parquet")
    with pytest.raises(ResultsSchemaError, match="stray.parquet"):
        read_table(tmp_path, "irof")


@pytest.mark.parametrize("row, message", [
    (accuracy_row(run=None), "'run' has 1 null"),
    (accuracy_row(run="one"), "'run' is not int64"),
    (accuracy_row(colour="red"), r"unknown columns \['colour'\]"),
    ({k: v for k, v in accuracy_row().items() if k != "loss"}, r"missing columns \['loss'\]"),
])
def test_bad_rows_are_refused_and_nothing_is_written(tmp_path, row, message):
    with pytest.raises(ResultsSchemaError, match=message):
        write_rows(tmp_path, "accuracy", [row], partition="bad")
    assert not (tmp_path / "accuracy").exists()


def test_bad_table_or_partition_is_refused(tmp_path):
    with pytest.raises(KeyError, match="unknown results table"):
        write_rows(tmp_path, "speed", [], partition="x")
    with pytest.raises(ResultsSchemaError, match="no rows"):
        write_rows(tmp_path, "irof", [], partition="x")
    for partition in ("../escape", "/abs/path", ""):
        with pytest.raises(ValueError, match="relative path"):
            write_rows(tmp_path, "irof", irof_rows(1, 0, 1), partition=partition)


WRITER = """
import sys
from core.results import write_rows
sys.path.insert(0, {tests!r})
from result_files import irof_rows
worker = int(sys.argv[1])
for step in range(8):
    write_rows(sys.argv[2], "irof", irof_rows(worker, step, 20), partition=f"w{{worker}}/step{{step}}")
    # Every worker also rewrites one shared partition: the last complete one must survive whole.
    write_rows(sys.argv[2], "irof", irof_rows(worker, 100, 5 + worker), partition="shared")
"""


def test_concurrent_writers_lose_nothing(tmp_path):
    script = WRITER.format(tests=str(REPO / "tests"))
    workers = [subprocess.Popen([sys.executable, "-c", script, str(w), str(tmp_path)], cwd=REPO)
               for w in range(1, 5)]
    assert [w.wait(timeout=120) for w in workers] == [0] * 4
    table = read_table(tmp_path, "irof")
    per_step = table.filter(pl.col("step") < 100)
    assert per_step.height == 4 * 8 * 20
    assert per_step.group_by("run", "step").len()["len"].to_list() == [20] * 32
    shared = pq.read_table(tmp_path / "irof" / "shared.parquet").to_pylist()
    assert len({r["run"] for r in shared}) == 1 and len(shared) == 5 + shared[0]["run"]
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]


# Writes the real Parquet bytes but stops halfway through the file, then waits to be killed.
CRASHER = """
import io, sys, time
import core.results as results
def half_write(table, where):
    buffer = io.BytesIO()
    real_write_table(table, buffer)
    f = open(where, "wb")
    f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    f.flush()
    print("half written", flush=True)
    time.sleep(120)
real_write_table = results.pq.write_table
results.pq.write_table = half_write
sys.path.insert(0, {tests!r})
from result_files import irof_rows
results.write_rows(sys.argv[1], "irof", irof_rows(2, 0, 500), partition="temporal/run2/step0")
"""


def test_a_crash_mid_write_leaves_no_readable_partial_file(tmp_path):
    write_rows(tmp_path, "irof", irof_rows(1, 0, 7), partition="temporal/run1/step0")
    child = subprocess.Popen([sys.executable, "-c", CRASHER.format(tests=str(REPO / "tests")),
                              str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "half written"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    leftovers = [p for p in (tmp_path / "irof").rglob("*") if ".tmp-" in p.name]
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0
    with pytest.raises(pa.ArrowInvalid):
        pq.read_metadata(leftovers[0])  # really a partial file …
    assert not (tmp_path / "irof" / "temporal" / "run2" / "step0.parquet").exists()
    table = read_table(tmp_path, "irof")  # … which readers never see
    assert table.height == 7 and set(table["run"]) == {1}
    write_rows(tmp_path, "irof", irof_rows(2, 0, 3), partition="temporal/run2/step0")
    assert read_table(tmp_path, "irof").height == 10


def test_a_models_partition_is_spelled_once_and_read_back():
    from core.results import model_partition, parse_model_partition
    assert model_partition("spatial", 1, 3) == "spatial/run1/step3"
    assert model_partition("temporal", 2, 0, "random") == "random/temporal/run2/step0"
    assert model_partition("spatial", 1, 3, "finetune_only", "trained") == "finetune_only/spatial/run1/step3/trained"
    for args in (("spatial", 5, 17, "slimming"), ("fusion", 1, 2, "random")):
        assert parse_model_partition(model_partition(*args)) == dict(zip(("stream", "run", "step", "chain"), args))
