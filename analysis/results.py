"""The results store: explicit Arrow schemas, one atomic writer, schema-checked readers.

A table is a folder of Parquet files, ``<results>/<table>/<partition>.parquet``, one file
per finished unit of work (``spatial/run1/step3``). A file is written to a temporary name
in the same folder, fsynced and renamed, so readers (and other writers, on any node that
mounts the folder) only ever see complete files. The writer stamps every row with
``written_at``; readers keep the newest row per key (``KEYS``), so re-running a unit of
work under a new partition name still supersedes the old rows.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

WRITTEN_AT = "written_at"
TIMESTAMP = pa.timestamp("us", tz="UTC")


class ResultsSchemaError(ValueError):
    """Rows or a Parquet file that do not match a results table's schema."""


def _schema(*fields: tuple[str, pa.DataType, bool]) -> pa.Schema:
    """(name, type, nullable) fields plus the writer's ``written_at`` stamp."""
    return pa.schema([pa.field(n, t, nullable=null) for n, t, null in fields]
                     + [pa.field(WRITTEN_AT, TIMESTAMP, nullable=False)])


STR, INT, FLOAT = pa.string(), pa.int64(), pa.float64()

SCHEMAS: dict[str, pa.Schema] = {
    # one row per evaluated model
    "accuracy": _schema(
        ("experiment", STR, False), ("stream", STR, False),  # spatial | temporal | fusion
        ("fusion", STR, True),  # mean | svm_softmax | svm_features; null for single streams
        ("run", INT, False), ("seed", INT, False), ("step", INT, False),
        ("prune_ratio", FLOAT, False), ("channels_removed", FLOAT, False),
        ("params_removed", FLOAT, False), ("flops_removed", FLOAT, False),
        ("split", INT, False), ("clip_accuracy", FLOAT, False), ("video_accuracy", FLOAT, False),
        ("video_top5", FLOAT, False), ("loss", FLOAT, False), ("n_videos", INT, False),
        ("checkpoint", STR, True), ("latency_ms", FLOAT, True),  # per-clip inference, optional
        ("finished_at", TIMESTAMP, False),
        # Network Slimming settings of the row: residual groups pruned too (else internal channels
        # only), and the |γ| threshold of this step's prune (null for step 0 and fused rows)
        ("residual", pa.bool_(), True), ("threshold", FLOAT, True),
    ),
    # training curves
    "epochs": _schema(
        ("experiment", STR, False), ("stream", STR, False), ("run", INT, False),
        ("step", INT, False), ("epoch", INT, False), ("phase", STR, False),  # train | val
        ("loss", FLOAT, False), ("accuracy", FLOAT, False), ("lr", FLOAT, False),
        ("seconds", FLOAT, False),
    ),
    # one row per explained clip
    "irof": _schema(
        ("experiment", STR, False), ("stream", STR, False), ("run", INT, False),
        ("step", INT, False), ("prune_ratio", FLOAT, False), ("video", STR, False),
        ("clip", INT, False), ("label", INT, False), ("target", INT, False),
        ("predicted", INT, False), ("method", STR, False), ("irof", FLOAT, False),
        ("n_segments", INT, False), ("seconds", FLOAT, False),
    ),
    # |γ| histogram of one model's prunable BatchNorms (log-spaced bins), Network Slimming's Figure 4:
    # phase = initial (before baseline training) | trained (step 0) | finetuned (step k > 0)
    "gammas": _schema(
        ("experiment", STR, False), ("stream", STR, False), ("run", INT, False), ("step", INT, False),
        ("phase", STR, False), ("residual", pa.bool_(), False), ("bin", INT, False),
        ("bin_low", FLOAT, False), ("bin_high", FLOAT, False), ("count", INT, False),
        ("threshold", FLOAT, True),  # |γ| threshold of this step's prune; null when none
    ),
}

KEYS: dict[str, tuple[str, ...]] = {
    "accuracy": ("experiment", "stream", "fusion", "run", "step", "split"),
    "epochs": ("experiment", "stream", "run", "step", "epoch", "phase"),
    "irof": ("experiment", "stream", "run", "step", "video", "clip", "method"),
    "gammas": ("experiment", "stream", "run", "step", "phase", "bin"),
}


def _schema_of(table: str) -> pa.Schema:
    if table not in SCHEMAS:
        raise KeyError(f"unknown results table {table!r}; known: {sorted(SCHEMAS)}")
    return SCHEMAS[table]


def table_path(results_dir: Path, table: str, partition: str) -> Path:
    """``results_dir/<table>/<partition>.parquet``; the partition must stay inside the table."""
    _schema_of(table)
    parts = Path(partition).parts
    if not parts or Path(partition).is_absolute() or any(p in ("..", ".", "") for p in parts):
        raise ValueError(f"partition {partition!r} must be a relative path like 'spatial/run1/step0'")
    return Path(results_dir) / table / f"{partition}.parquet"


def to_arrow(table: str, rows: Sequence[dict] | pl.DataFrame, written_at: datetime) -> pa.Table:
    """Rows (dicts or a Polars frame) as an Arrow table of ``SCHEMAS[table]``, or a clear error.

    Nullable columns may be left out (written as null); ``written_at`` is the writer's stamp.
    """
    schema = _schema_of(table)
    given = schema.remove(schema.get_field_index(WRITTEN_AT))
    rows = rows.to_dicts() if isinstance(rows, pl.DataFrame) else list(rows)
    if not rows:
        raise ResultsSchemaError(f"no rows to write to table {table!r}")
    names = set().union(*(r.keys() for r in rows))
    missing = [f.name for f in given if f.name not in names and not f.nullable]
    unknown = sorted(names - set(given.names))
    if missing or unknown:
        raise ResultsSchemaError(f"rows for table {table!r}: missing columns {missing}, "
                                 f"unknown columns {unknown}")
    columns = []
    for field in given:
        try:
            columns.append(pa.array([r.get(field.name) for r in rows], type=field.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise ResultsSchemaError(f"rows for table {table!r}: column {field.name!r} "
                                     f"is not {field.type}: {exc}") from exc
    arrow = pa.Table.from_arrays(columns, schema=given)
    for field in given:
        if not field.nullable and arrow.column(field.name).null_count:
            raise ResultsSchemaError(f"rows for table {table!r}: column {field.name!r} has "
                                     f"{arrow.column(field.name).null_count} null value(s)")
    stamp = pa.array([written_at] * arrow.num_rows, type=TIMESTAMP)
    return arrow.append_column(schema.field(WRITTEN_AT), stamp)


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds, fsync it and rename.

    The temporary name (``<name>.tmp-<pid>-<random>``) never matches a reader's glob, and a
    failed or killed writer leaves at most that temporary file, never a partial ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        folder = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    finally:
        tmp.unlink(missing_ok=True)


def write_rows(results_dir: Path, table: str, rows: Sequence[dict] | pl.DataFrame, *,
               partition: str) -> Path:
    """Write one unit of work's rows atomically; rewriting a partition replaces it."""
    path = table_path(results_dir, table, partition)
    arrow = to_arrow(table, rows, datetime.now(timezone.utc))
    with atomic_file(path) as tmp:
        pq.write_table(arrow, tmp)
    return path


def table_files(results_dir: Path, table: str) -> list[Path]:
    """The table's finished Parquet files, each checked against ``SCHEMAS[table]``."""
    expected = [(f.name, f.type) for f in _schema_of(table)]
    files = sorted((Path(results_dir) / table).rglob("*.parquet"))
    for file in files:
        try:
            found = pq.read_schema(file)
        except (pa.ArrowInvalid, OSError) as exc:
            raise ResultsSchemaError(f"{file}: not a readable Parquet file: {exc}") from exc
        if [(f.name, f.type) for f in found] != expected:
            got = ", ".join(f"{f.name}: {f.type}" for f in found)
            raise ResultsSchemaError(f"{file}: not a {table!r} results file (columns: {got})")
    return files


def scan_table(results_dir: Path, table: str) -> pl.LazyFrame:
    """Lazy, schema-checked scan of a table, newest row per key (empty if nothing written)."""
    files = table_files(results_dir, table)
    if not files:
        return pl.from_arrow(SCHEMAS[table].empty_table()).lazy()
    return (pl.scan_parquet(files, hive_partitioning=False)
            .sort(WRITTEN_AT, maintain_order=True)
            .unique(subset=list(KEYS[table]), keep="last", maintain_order=True))


def read_table(results_dir: Path, table: str) -> pl.DataFrame:
    """Schema-checked table, newest row per key."""
    return scan_table(results_dir, table).collect()
