"""Issue 27: every accuracy, epochs, irof, saliency-change and γ row carries its pruning chain."""
from __future__ import annotations

from datetime import datetime, timezone

import polars as pl
import pyarrow.parquet as pq
import pytest

from core.results import (KEYS, SCHEMAS, VERSION_KEY, chain_partition, model_partition, read_table, to_arrow,
                          write_rows)
from core.config import ConfigError, ExperimentConfig
from pipeline.validation import config_problems

ACCURACY = dict(experiment="e", stream="spatial", fusion=None, run=1, seed=1, step=2, prune_ratio=0.36,
                channels_removed=0.36, params_removed=0.3, flops_removed=0.3, split=1, clip_accuracy=40.0,
                video_accuracy=50.0, video_top5=90.0, loss=1.0, n_videos=8,
                finished_at=datetime.now(timezone.utc))


def schema3_file(path, table, row):
    """A file as schema 3 wrote it: no chain (nor the other schema-4 columns), version key 3."""
    arrow = to_arrow(table, [row], datetime.now(timezone.utc))
    arrow = arrow.drop_columns([c for c in ("chain", "ece", "irof_random") if c in arrow.column_names])
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(arrow.replace_schema_metadata({VERSION_KEY: b"3"}), path)


@pytest.mark.parametrize("table", ["accuracy", "epochs", "irof", "saliency_change", "gammas"])
def test_every_table_keys_on_chain(table):
    assert "chain" in SCHEMAS[table].names and "chain" in KEYS[table]


def test_files_without_chain_read_as_slimming(tmp_path):
    schema3_file(tmp_path / "accuracy" / "spatial" / "run1" / "step2.parquet", "accuracy", ACCURACY)
    table = read_table(tmp_path, "accuracy")
    assert table["chain"].to_list() == ["slimming"]
    assert table["ece"].to_list() == [None]


def test_chains_at_one_step_are_kept_apart(tmp_path):
    """Same stream, run and step in two chains: two rows, neither replaces the other."""
    for chain, acc in (("slimming", 50.0), ("random", 30.0), ("finetune_only", 60.0)):
        write_rows(tmp_path, "accuracy", [{**ACCURACY, "chain": chain, "video_accuracy": acc, "ece": 0.1}],
                   partition=chain_partition(chain, "spatial/run1/step2"))
    table = read_table(tmp_path, "accuracy").sort("chain")
    assert table.select("chain", "video_accuracy").rows() == [("finetune_only", 60.0), ("random", 30.0),
                                                               ("slimming", 50.0)]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet")) == [
        "accuracy/finetune_only/spatial/run1/step2.parquet", "accuracy/random/spatial/run1/step2.parquet",
        "accuracy/spatial/run1/step2.parquet"]


def test_reading_some_partitions_equals_filtering_the_whole_table(tmp_path):
    """``read_table(..., partitions)`` (the fuse stage's read of two models' rows) gives the rows
    of the full read in those partitions, newest per key; a partition not written is no error."""
    for chain, stream, step, acc in (("slimming", "spatial", 2, 50.0), ("random", "spatial", 2, 30.0),
                                     ("slimming", "temporal", 2, 40.0), ("slimming", "spatial", 3, 45.0)):
        write_rows(tmp_path, "accuracy", [{**ACCURACY, "chain": chain, "stream": stream, "step": step,
                                           "video_accuracy": acc}],
                   partition=model_partition(stream, 1, step, chain))
    write_rows(tmp_path, "accuracy", [{**ACCURACY, "video_accuracy": 51.0}], partition=model_partition("spatial", 1, 2))
    wanted = [model_partition(s, 1, 2) for s in ("spatial", "temporal")] + [model_partition("spatial", 9, 9)]
    some = read_table(tmp_path, "accuracy", wanted).sort("stream")
    whole = read_table(tmp_path, "accuracy").filter((pl.col("step") == 2) & (pl.col("chain") == "slimming"))
    assert some.drop("written_at").equals(whole.sort("stream").drop("written_at"))
    assert some["video_accuracy"].to_list() == [51.0, 40.0]


def test_a_writer_naming_no_chain_writes_slimming(tmp_path):
    path = write_rows(tmp_path, "accuracy", [ACCURACY], partition="spatial/run1/step2")
    assert pq.read_table(path)["chain"].to_pylist() == ["slimming"]


def test_config_chains_and_their_paths(tmp_path):
    cfg = ExperimentConfig.from_dict({"experiment": {"root": str(tmp_path)},
                                      "prune": {"chains": ["slimming", "finetune_only", "random"]}})
    paths = cfg.paths
    assert paths.checkpoint("spatial", 1, 3) == paths.checkpoint("spatial", 1, 3, "slimming") \
        == tmp_path / "checkpoints/spatial/run1/step3.pt"
    assert paths.checkpoint("spatial", 1, 3, "random") == tmp_path / "checkpoints/random/spatial/run1/step3.pt"
    # step 0, the unpruned model, is every chain's start
    assert paths.checkpoint("temporal", 2, 0, "finetune_only") == paths.checkpoint("temporal", 2, 0)
    assert paths.scores("spatial", 1, 2, "test", "finetune_only") == \
        tmp_path / "scores/finetune_only/spatial/run1/step2_test.npz"
    assert ExperimentConfig.from_dict({}).prune.chains == ["slimming"]
    with pytest.raises(ConfigError, match=r"prune.chains\[1\]: 'scratch' is not one of"):
        ExperimentConfig.from_dict({"prune": {"chains": ["slimming", "scratch"]}})
    twice = ExperimentConfig.from_dict({"prune": {"chains": ["random", "random"]}})
    assert any(p.startswith("prune.chains:") for p in config_problems(twice, []))


def test_the_dry_run_counts_the_chains_work(tmp_path):
    """The plan the dry run prints: 3 chains triple the prune trials; the controls add their tested
    steps (explain.steps 3 and the last, 5) to fusion and explanation."""
    from pipeline.preflight import stage_work

    cfg = ExperimentConfig.from_dict({"experiment": {"root": str(tmp_path)}, "train": {"runs": 2},
                                      "prune": {"steps": 5, "chains": ["slimming", "finetune_only", "random"]},
                                      "explain": {"steps": [0, 3]}})
    work = "\n".join(stage_work(cfg, ["prune", "fuse", "explain"]))
    assert "prune: 12 Tune trials (2 streams × 2 runs × 3 chains) of 5 steps each" in work
    assert "fuse: 20 Ray tasks (2 runs × (6 steps + 4 control steps))" in work
    assert "explain: 24 models explained" in work  # 2 streams × 2 runs × (2 + 2 chains × 2)
