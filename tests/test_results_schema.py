"""Results schema versioning: older files, Polars-written files, real conflicts, provenance."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.results import (PROVENANCE_ENV, SCHEMA_VERSION, SCHEMAS, VERSION_KEY, ResultsSchemaError,
                              read_table, to_arrow, write_rows)

ROW = {"experiment": "e", "stream": "spatial", "run": 1, "step": 0, "epoch": 1, "phase": "train",
       "loss": 0.5, "accuracy": 60.0, "lr": 0.01, "seconds": 2.0}


@pytest.fixture(autouse=True)
def no_provenance_env(monkeypatch):
    for variable in PROVENANCE_ENV.values():
        monkeypatch.delenv(variable, raising=False)


def version1_file(path, row):
    """A file as the writer wrote it before the provenance columns (no version key)."""
    old = pa.schema([f for f in SCHEMAS["epochs"] if f.name not in PROVENANCE_ENV])
    table = to_arrow("epochs", [row], datetime.now(timezone.utc)).select(old.names).cast(old)
    path.parent.mkdir(parents=True)
    pq.write_table(table.replace_schema_metadata(None), path)


def test_files_carry_the_schema_version(tmp_path):
    path = write_rows(tmp_path, "epochs", [ROW], partition="spatial/run1/step0")
    assert pq.read_schema(path).metadata[VERSION_KEY] == str(SCHEMA_VERSION).encode()


def test_previous_schema_reads_with_null_provenance(tmp_path):
    version1_file(tmp_path / "epochs" / "old.parquet", ROW)
    write_rows(tmp_path, "epochs", [{**ROW, "epoch": 2, "config_hash": "h"}], partition="new")
    table = read_table(tmp_path, "epochs").sort("epoch")
    assert table["epoch"].to_list() == [1, 2]
    assert table["config_hash"].to_list() == [None, "h"]
    assert table.schema == pl.from_arrow(SCHEMAS["epochs"].empty_table()).schema


def test_a_polars_written_file_is_read(tmp_path):
    # (a null chain reads as slimming: name it, so the frames compare equal)
    expected = pl.from_arrow(to_arrow("epochs", [{**ROW, "chain": "slimming"}], datetime.now(timezone.utc)))
    (tmp_path / "epochs").mkdir()
    expected.drop("git_commit").write_parquet(tmp_path / "epochs" / "polars.parquet")  # large_string/view
    table = read_table(tmp_path, "epochs")
    assert table.drop("git_commit").equals(expected.drop("git_commit"))
    assert table["git_commit"].to_list() == [None]


@pytest.mark.parametrize("change, message", [
    (lambda df: df.with_columns(pl.col("loss").cast(pl.String)), "column 'loss' is"),
    (lambda df: df.drop("accuracy"), "required column 'accuracy'"),
    (lambda df: df.with_columns(pl.lit(1).alias("bogus")), "column 'bogus' is not in"),
])
def test_real_conflicts_name_file_and_column(tmp_path, change, message):
    frame = pl.from_arrow(to_arrow("epochs", [ROW], datetime.now(timezone.utc)))
    (tmp_path / "epochs").mkdir()
    change(frame).write_parquet(tmp_path / "epochs" / "bad.parquet")
    with pytest.raises(ResultsSchemaError, match=message) as exc:
        read_table(tmp_path, "epochs")
    assert "bad.parquet" in str(exc.value)


def test_writer_fills_provenance_from_the_experiment_record(tmp_path, monkeypatch):
    (tmp_path / "experiment.json").write_text(json.dumps({"config_hash": "abcd", "git_commit": "c0ffee"}))
    write_rows(tmp_path / "results", "epochs", [ROW], partition="a")
    row = read_table(tmp_path / "results", "epochs").row(0, named=True)
    assert (row["config_hash"], row["git_commit"]) == ("abcd", "c0ffee")
    monkeypatch.setenv(PROVENANCE_ENV["git_commit"], "fromenv")
    write_rows(tmp_path / "results", "epochs", [{**ROW, "epoch": 2}], partition="b")
    assert read_table(tmp_path / "results", "epochs").sort("epoch")["git_commit"].to_list() == ["c0ffee", "fromenv"]
