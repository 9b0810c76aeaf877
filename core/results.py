"""The results store: explicit Arrow schemas, one atomic writer, schema-checked readers.

A table is a folder of Parquet files, ``<results>/<table>/<partition>.parquet``, one file
per finished unit of work (``spatial/run1/step3``). A file is written to a temporary name
in the same folder, fsynced and renamed, so readers (and other writers, on any node that
mounts the folder) only ever see complete files. The writer stamps every row with
``written_at``; readers keep the newest row per key (``KEYS``), so re-running a unit of
work under a new partition name still supersedes the old rows.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from core.atomic import atomic_file
from core.node import node_info

WRITTEN_AT = "written_at"
WHERE = ("host", "node_id")  # also stamped by the writer (core.node.node_info)
TIMESTAMP = pa.timestamp("us", tz="UTC")

# Version of the tables' layout, in every file's Parquet metadata. 1: before the provenance
# columns (files without the key); 2: ``config_hash``, ``git_commit``, ``host`` and ``node_id``
# added; 3: ``irof`` gains ``target_rule``, ``correct``, ``explain_hash``, ``checkpoint_sha256``
# and the ``saliency_change`` table is added; 4 (issue 27, controls): ``chain`` in accuracy, epochs,
# irof, saliency_change and gammas (and their keys), ``ece`` in accuracy, ``irof_random`` in irof,
# the same-target and run-to-run columns of saliency_change; 5 (issue 25, recipe and sparsity):
# ``video_accuracy_before_finetune`` and ``weights`` in accuracy, ``dropout``, ``select`` and
# ``selected`` in epochs. Readers take older files: columns a
# file lacks must be nullable and read as null, or as ``READ_DEFAULTS`` gives.
SCHEMA_VERSION = 5
VERSION_KEY = b"crossroads.schema_version"
# provenance columns the writer fills in when rows leave them out: from these environment
# variables if set, else from the sweep's ``<root>/experiment.json`` beside ``<root>/results``
PROVENANCE_ENV = {"config_hash": "CROSSROADS_CONFIG_HASH", "git_commit": "CROSSROADS_GIT_COMMIT"}
# columns that differ between two runs computing the same numbers: when and where a row was made,
# by which code and config, from which checkpoint file and explanation settings, and timings
RUN_SPECIFIC = frozenset({WRITTEN_AT, *WHERE, *PROVENANCE_ENV, "finished_at", "checkpoint", "checkpoint_sha256",
                          "explain_hash", "device", "seconds", "latency_ms", "throughput_cps"})


# The pruning chain a row belongs to (``prune.chains``): ``slimming`` (Network Slimming, the study),
# ``finetune_only`` (unpruned, fine-tuned as every step is) or ``random`` (random channel scores).
# Step 0 (the unpruned model, shared by every chain) is written as ``slimming``. Files of schema
# < 4 have no chain column: all their rows are the study's chain.
CHAIN = "chain"
DEFAULT_CHAIN = "slimming"
# what a null (or absent) value of a column reads as
READ_DEFAULTS = {CHAIN: DEFAULT_CHAIN}


class ResultsSchemaError(ValueError):
    """Rows or a Parquet file that do not match a results table's schema."""


# what a reader tells a user about a results file it cannot read (core.damaged)
DAMAGED_HINT = ("rerun the sweep (python -m pipeline.sweep --config <its yaml>): it sets the file aside "
                "as *.damaged and rebuilds what it held")


class DamagedPart(ResultsSchemaError):
    """A results file that cannot be read (cut short, corrupt); ``path`` and ``reason`` name it."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: not a readable Parquet file ({reason}); {DAMAGED_HINT}")


def _schema(*fields: tuple[str, pa.DataType, bool]) -> pa.Schema:
    """(name, type, nullable) fields plus the writer's stamps: ``written_at``, and ``host``
    and ``node_id`` (where the row was written; node_id null outside Ray)."""
    return pa.schema([pa.field(n, t, nullable=null) for n, t, null in fields]
                     + [pa.field(WRITTEN_AT, TIMESTAMP, nullable=False)]
                     + [pa.field(name, pa.string(), nullable=True) for name in WHERE])


def _with_provenance_columns(schema: pa.Schema) -> pa.Schema:
    """``schema`` with the nullable provenance columns (schema version 2) before ``written_at``.

    Files are matched to the schema by column name, so the order is only cosmetic."""
    stamps = (WRITTEN_AT, *WHERE)
    return pa.schema([f for f in schema if f.name not in stamps]
                     + [pa.field(n, pa.string(), nullable=True) for n in PROVENANCE_ENV]
                     + [schema.field(name) for name in stamps])


STR, INT, FLOAT = pa.string(), pa.int64(), pa.float64()

SCHEMAS: dict[str, pa.Schema] = {
    # one row per evaluated model
    "accuracy": _schema(
        ("experiment", STR, False), ("stream", STR, False),  # spatial | temporal | fusion
        ("fusion", STR, True),  # mean | svm_softmax | svm_features | svm_logits; null for single streams
        ("run", INT, False), ("seed", INT, False), ("step", INT, False),
        ("prune_ratio", FLOAT, False), ("channels_removed", FLOAT, False),
        ("params_removed", FLOAT, False), ("flops_removed", FLOAT, False),
        ("split", INT, False), ("clip_accuracy", FLOAT, False), ("video_accuracy", FLOAT, False),
        ("video_top5", FLOAT, False), ("loss", FLOAT, False), ("n_videos", INT, False),
        ("checkpoint", STR, True), ("latency_ms", FLOAT, True),  # per-clip inference, optional
        # clips/s at eval.throughput_batch, and where latency/throughput were measured ('cpu', 'cuda: <name>')
        ("throughput_cps", FLOAT, True), ("device", STR, True),
        ("finished_at", TIMESTAMP, False),
        ("svm_c", FLOAT, True),  # the C chosen for an svm_* fusion row; null otherwise
        # Network Slimming settings of the row: residual groups pruned too (else internal channels
        # only), and the |γ| threshold of this step's prune (null for step 0 and fused rows)
        ("residual", pa.bool_(), True), ("threshold", FLOAT, True),
        # schema 4: the pruning chain (null = slimming) and the expected calibration error of the
        # model's test video predictions (training.evaluate.expected_calibration_error; 0-1;
        # null where a fusion has no probabilities)
        ("chain", STR, True), ("ece", FLOAT, True),
        # schema 5: a step's accuracy right after removal, before fine-tuning, under the light
        # protocol (eval.light_clips clips, one crop); step 0: the unpruned model measured the same
        # way. And the initial weights the stream was built from (training.models.weights_name)
        ("video_accuracy_before_finetune", FLOAT, True), ("weights", STR, True),
    ),
    # training curves
    "epochs": _schema(
        ("experiment", STR, False), ("stream", STR, False), ("run", INT, False),
        ("step", INT, False), ("epoch", INT, False), ("phase", STR, False),  # train | val
        ("loss", FLOAT, False), ("accuracy", FLOAT, False), ("lr", FLOAT, False),
        ("seconds", FLOAT, False),
        ("chain", STR, True),  # schema 4: null = slimming
        # schema 5: the model's dropout, the selection rule (train.select, resolved) and whether
        # this epoch's weights were the ones kept
        ("dropout", FLOAT, True), ("select", STR, True), ("selected", pa.bool_(), True),
    ),
    # one row per explained clip
    "irof": _schema(
        ("experiment", STR, False), ("stream", STR, False), ("run", INT, False),
        ("step", INT, False), ("prune_ratio", FLOAT, False), ("video", STR, False),
        ("clip", INT, False), ("label", INT, False), ("target", INT, False),
        ("predicted", INT, False), ("method", STR, False), ("irof", FLOAT, False),
        ("n_segments", INT, False), ("seconds", FLOAT, False),
        # schema 3 (null in older files): the target rule (explain.target: predicted | label),
        # predicted == label, and what the row came from (explanations.stage: a row whose
        # explain_hash or checkpoint_sha256 differs from today's is stale and explained again)
        ("target_rule", STR, True), ("correct", pa.bool_(), True),
        ("explain_hash", STR, True), ("checkpoint_sha256", STR, True),
        # schema 4: the chain (null = slimming) and IROF of a seeded random order of the same
        # segments (the chance level of this clip and model; explanations.irof ``random_seeds``)
        ("chain", STR, True), ("irof_random", FLOAT, True),
    ),
    # schema 3: per explained clip and step k > 0, the pruned model's saliency map against the
    # unpruned (step 0) model's map of the same clip, same channel reduction (explanations.saliency_change)
    "saliency_change": _schema(
        ("experiment", STR, False), ("stream", STR, False), ("run", INT, False),
        ("step", INT, False), ("prune_ratio", FLOAT, False), ("video", STR, False),
        ("clip", INT, False), ("method", STR, False), ("target_rule", STR, False),
        ("target", INT, False), ("base_target", INT, False),  # class explained by the pruned / unpruned model
        ("spearman", FLOAT, True),  # null when a map is constant
        ("iou_top", FLOAT, False), ("top_fraction", FLOAT, False),
        ("explain_hash", STR, False), ("checkpoint_sha256", STR, False),
        ("base_checkpoint_sha256", STR, False),
        # schema 4: the chain (null = slimming); ``base_run`` the run of the base model (null = this
        # run's step 0; a step-0 row compares two unpruned runs: the run-to-run reference);
        # the pruned map for the base model's target (both maps explain the same class), and
        # whether the two models predict differently
        ("chain", STR, True), ("base_run", INT, True),
        ("spearman_same", FLOAT, True), ("iou_top_same", FLOAT, True),
        ("prediction_changed", pa.bool_(), True),
    ),
    # issue 30: one row per (explained clip, explanation method, faithfulness metric) of one
    # checkpoint (explanations.grid); one file per (chain, stream, run, step), rows sorted by method
    # and metric. (vanilla_gradient, irof) repeats the irof table's score (read_faithfulness
    # also reads irof-table files that have no faithfulness twin)
    "faithfulness": _schema(
        ("experiment", STR, False), ("stream", STR, False), ("chain", STR, True), ("run", INT, False),
        ("step", INT, False), ("prune_ratio", FLOAT, False), ("video", STR, False), ("clip", INT, False),
        ("method", STR, False), ("reduce", STR, True),  # channel reduction; null for grad_cam
        ("metric", STR, False),
        ("score", FLOAT, True), ("score_random", FLOAT, True),  # null: undefined (e.g. constant map)
        ("label", INT, False), ("target", INT, False), ("predicted", INT, False), ("correct", pa.bool_(), False),
        ("target_rule", STR, False), ("seconds", FLOAT, True),  # metric's time per clip (with its control)
        ("explain_hash", STR, False), ("checkpoint_sha256", STR, False),
    ),
    # |γ| histogram of one model's prunable BatchNorms (log-spaced bins), Network Slimming's Figure 4:
    # phase = initial (before baseline training) | trained (step 0) | finetuned (step k > 0)
    "gammas": _schema(
        ("experiment", STR, False), ("stream", STR, False), ("run", INT, False), ("step", INT, False),
        ("phase", STR, False), ("residual", pa.bool_(), False), ("bin", INT, False),
        ("bin_low", FLOAT, False), ("bin_high", FLOAT, False), ("count", INT, False),
        ("threshold", FLOAT, True),  # |γ| threshold of this step's prune; null when none
        ("chain", STR, True),  # schema 4: null = slimming
    ),
}

SCHEMAS = {name: _with_provenance_columns(schema) for name, schema in SCHEMAS.items()}

KEYS: dict[str, tuple[str, ...]] = {
    "accuracy": ("experiment", "stream", "fusion", "chain", "run", "step", "split"),
    "epochs": ("experiment", "stream", "chain", "run", "step", "epoch", "phase"),
    "irof": ("experiment", "stream", "chain", "run", "step", "video", "clip", "method"),
    "gammas": ("experiment", "stream", "chain", "run", "step", "phase", "bin"),
    "saliency_change": ("experiment", "stream", "chain", "run", "step", "video", "clip", "method"),
    "faithfulness": ("experiment", "stream", "chain", "run", "step", "video", "clip", "method", "metric"),
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
    given = pa.schema([f for f in schema if f.name not in (WRITTEN_AT, *WHERE)])
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
    arrow = arrow.append_column(schema.field(WRITTEN_AT), stamp)
    for name, value in node_info().items():
        arrow = arrow.append_column(schema.field(name), pa.array([value] * arrow.num_rows, pa.string()))
    return arrow.replace_schema_metadata({VERSION_KEY: str(SCHEMA_VERSION).encode()})


def provenance(results_dir: Path) -> dict[str, str | None]:
    """``config_hash`` and ``git_commit`` of the experiment whose results folder this is."""
    record = {}
    try:
        record = json.loads((Path(results_dir).parent / "experiment.json").read_text())
    except (OSError, ValueError):
        pass
    return {column: os.environ.get(variable) or record.get(column)
            for column, variable in PROVENANCE_ENV.items()}


def _with_provenance(results_dir: Path, table: str, rows: Sequence[dict] | pl.DataFrame) -> list[dict]:
    """Rows with ``config_hash``/``git_commit`` filled in where they are not given."""
    rows = rows.to_dicts() if isinstance(rows, pl.DataFrame) else [dict(r) for r in rows]
    names = _schema_of(table).names
    if CHAIN in names:  # a writer that names no chain writes the study's
        for row in rows:
            if row.get(CHAIN) is None:
                row[CHAIN] = DEFAULT_CHAIN
    for column, value in provenance(results_dir).items():
        if value and column in names:
            for row in rows:
                row.setdefault(column, value)
    return rows


def write_rows(results_dir: Path, table: str, rows: Sequence[dict] | pl.DataFrame, *,
               partition: str) -> Path:
    """Write one unit of work's rows atomically; rewriting a partition replaces it."""
    path = table_path(results_dir, table, partition)
    arrow = to_arrow(table, _with_provenance(results_dir, table, rows), datetime.now(timezone.utc))
    with atomic_file(path) as tmp:
        pq.write_table(arrow, tmp)
    return path


def _compatible(found: pa.DataType, expected: pa.DataType) -> bool:
    """A stored type that reads losslessly as ``expected`` (Polars/Arrow writer variants)."""
    if found == expected:
        return True
    if pa.types.is_string(expected):
        return pa.types.is_string(found) or pa.types.is_large_string(found) or \
            pa.types.is_string_view(found) or pa.types.is_null(found)
    if pa.types.is_integer(expected):
        return pa.types.is_integer(found) or pa.types.is_null(found)
    if pa.types.is_floating(expected):
        return pa.types.is_floating(found) or pa.types.is_null(found)
    if pa.types.is_timestamp(expected):
        return pa.types.is_timestamp(found) and found.tz == expected.tz
    return False


def check_file_schema(file: Path, table: str) -> pa.Schema:
    """The file's schema, if it reads as ``table``; else an error naming file and column."""
    expected = _schema_of(table)
    try:
        found = pq.read_schema(file)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DamagedPart(file, str(exc)) from exc
    version = int((found.metadata or {}).get(VERSION_KEY, b"1"))
    if version > SCHEMA_VERSION:
        raise ResultsSchemaError(f"{file}: schema version {version} is newer than this code's "
                                 f"{SCHEMA_VERSION}; update the code")
    for field in found:
        if field.name not in expected.names:
            raise ResultsSchemaError(f"{file}: column {field.name!r} is not in the {table!r} table "
                                     f"(columns: {expected.names})")
        want = expected.field(field.name).type
        if not _compatible(field.type, want):
            raise ResultsSchemaError(f"{file}: column {field.name!r} is {field.type}, "
                                     f"the {table!r} table needs {want}")
    for field in expected:
        if field.name not in found.names and not field.nullable:
            raise ResultsSchemaError(f"{file}: required column {field.name!r} of table {table!r} "
                                     f"is missing")
    return found


def table_files(results_dir: Path, table: str, partitions: Sequence[str] | None = None) -> list[Path]:
    """The table's finished Parquet files (only those of ``partitions``, where given, that
    exist), each checked against ``SCHEMAS[table]``."""
    if partitions is None:
        files = sorted((Path(results_dir) / table).rglob("*.parquet"))
    else:
        files = [f for f in (table_path(results_dir, table, p) for p in partitions) if f.is_file()]
    for file in files:
        check_file_schema(file, table)
    return files


def _scan_file(file: Path, table: str) -> pl.LazyFrame:
    """One file in the table's current columns and types (columns it lacks are null)."""
    target = pl.from_arrow(SCHEMAS[table].empty_table()).schema
    present = pq.read_schema(file).names
    columns = []
    for name, dtype in target.items():
        column = (pl.col(name) if name in present else pl.lit(None)).cast(dtype)
        if name in READ_DEFAULTS:
            column = column.fill_null(pl.lit(READ_DEFAULTS[name], dtype))
        columns.append(column.alias(name))
    return pl.scan_parquet(file, hive_partitioning=False).select(columns)


def model_partition(stream: str, run: int, step: int, chain: str = DEFAULT_CHAIN, *rest: str) -> str:
    """The partition of one model's rows (stream, run, pruning step, chain), the one place its
    path is spelled: ``spatial/run1/step3`` (``rest`` adds a level, e.g. the γ table's phase),
    a control's under its chain (``random/spatial/run1/step3``). Saliency maps use it too."""
    return chain_partition(chain, "/".join([stream, f"run{run}", f"step{step}", *rest]))


def parse_model_partition(partition: str) -> dict:
    """``model_partition``'s inverse: stream, run, step and chain of ``spatial/run1/step3`` or
    ``random/spatial/run1/step3`` (a saved map's folder under ``saliency/``, say)."""
    parts = partition.split("/")
    chain = parts.pop(0) if len(parts) == 4 else DEFAULT_CHAIN
    stream, run, step = parts
    return {"stream": stream, "run": int(run.removeprefix("run")), "step": int(step.removeprefix("step")),
            "chain": chain}


def chain_partition(chain: str, partition: str) -> str:
    """A results partition of ``chain``: the study's (slimming) as before, a control's under
    ``<chain>/`` (``random/spatial/run1/step3``), so no chain's file replaces another's."""
    return partition if chain == DEFAULT_CHAIN else f"{chain}/{partition}"


def scan_table(results_dir: Path, table: str, partitions: Sequence[str] | None = None) -> pl.LazyFrame:
    """Lazy, schema-checked scan of a table (of ``partitions`` only, where given), newest row
    per key (empty if nothing written)."""
    files = table_files(results_dir, table, partitions)
    if not files:
        return pl.from_arrow(SCHEMAS[table].empty_table()).lazy()
    return (pl.concat([_scan_file(f, table) for f in files], how="vertical")
            .sort(WRITTEN_AT, maintain_order=True)
            .unique(subset=list(KEYS[table]), keep="last", maintain_order=True))


def read_table(results_dir: Path, table: str, partitions: Sequence[str] | None = None) -> pl.DataFrame:
    """Schema-checked table (of ``partitions`` only, where given: a stage that needs a few models'
    rows need not read them all), newest row per key; ``DamagedPart`` names a file that cannot be read."""
    try:
        return scan_table(results_dir, table, partitions).collect()
    except (pl.exceptions.ComputeError, OSError, pa.ArrowException) as exc:  # a damaged body
        from core.damaged import part_problem  # its footer read fine: find the file
        for file in table_files(results_dir, table, partitions):
            problem = part_problem(file)
            if problem:
                raise DamagedPart(file, problem) from exc
        raise
