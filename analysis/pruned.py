"""What "% pruned" means, per pruning step: the fractions removed and Network Slimming's thresholds.

Three different fractions describe one pruned model (all in the ``accuracy`` table):
``channels_removed`` is the share of the stream's *prunable* channels removed (what the pruning
ratio 1 − 0.96^k targets; internal block channels only unless ``prune.residual``), while
``params_removed`` and ``flops_removed`` are shares of the whole stream's parameters and FLOPs.
They differ a lot (43.53 % of ResNet-101's internal channels is about 52 % of its parameters),
so every table and axis of the report names which one it shows.
"""
from __future__ import annotations

import polars as pl

STREAMS = ("spatial", "temporal")

# one sentence for captions and the report's headline
DEFINITIONS = ("channels = share of the stream's prunable channels removed (the pruning ratio; internal "
               "block channels, plus the residual groups when prune.residual); params / FLOPs = share of "
               "the whole stream's parameters / FLOPs removed, measured on the pruned model")


def _per_step(accuracy: pl.DataFrame) -> pl.LazyFrame:
    return (accuracy.lazy().filter(pl.col("stream").is_in(STREAMS))
            .group_by("stream", "step")
            .agg(pl.col("run").n_unique().alias("runs"),
                 (100 * pl.col("prune_ratio").mean()).alias("channels_target_%"),
                 (100 * pl.col("channels_removed").mean()).alias("channels_removed_%"),
                 (100 * pl.col("params_removed").mean()).alias("params_removed_%"),
                 (100 * pl.col("flops_removed").mean()).alias("flops_removed_%"),
                 pl.col("threshold").mean().alias("threshold_mean"),
                 pl.col("threshold").min().alias("threshold_min"),
                 pl.col("threshold").max().alias("threshold_max"))
            .sort("stream", "step"))


def fractions_table(accuracy: pl.DataFrame) -> pl.DataFrame:
    """Per stream and step (mean over runs, in %): prunable channels targeted and removed,
    parameters and FLOPs removed. Fusion rows are the mean of the two streams' and left out."""
    columns = ["stream", "step", "runs", "channels_target_%", "channels_removed_%", "params_removed_%",
               "flops_removed_%"]
    return _per_step(accuracy).select(columns).with_columns(pl.col(columns[3:]).round(2)).collect()


def threshold_table(accuracy: pl.DataFrame) -> pl.DataFrame:
    """Per stream and pruned step: the global |γ| threshold the step pruned at (mean, min, max
    over runs; channels with a lower score were removed) beside the channels removed."""
    columns = ["stream", "step", "runs", "channels_target_%", "channels_removed_%", "threshold_mean",
               "threshold_min", "threshold_max"]
    return (_per_step(accuracy).filter(pl.col("step") > 0).select(columns)
            .with_columns(pl.col("channels_target_%", "channels_removed_%").round(2)).collect())


def step_ratios(accuracy: pl.DataFrame) -> dict[int, float]:
    """Pruning ratio (target share of prunable channels, 0–1) of each step."""
    ratios = accuracy.group_by("step").agg(pl.col("prune_ratio").mean())
    return dict(zip(ratios["step"].to_list(), ratios["prune_ratio"].to_list()))
