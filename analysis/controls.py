"""The study's chain against each control chain at the same step, runs paired (issue 27).

A change at a pruning step may come from the channels removed or from what every step also does:
``finetune_only`` fine-tunes the unpruned model as often and removes nothing, ``random`` removes
as many channels chosen at random. ``versus_controls`` sets each step the study's chain shares
with a control side by side, per model, over the runs present in both: the mean of
study − control with its 95 % t-interval, the paired t-test Holm-adjusted over the group's steps,
and ``analysis.paired``'s flags (n < 3, zero spread). A difference near 0 with a narrow interval
says the control moves the metric as far: that change is not the pruning's own.
"""
from __future__ import annotations

import numpy as np
import polars as pl

from analysis import paired
from core.config import CHAINS, STUDY_CHAIN

CONTROLS = tuple(c for c in CHAINS if c != STUDY_CHAIN)
SCHEMA = {"control": pl.String, "step": pl.Int64, "prune_ratio": pl.Float64, "n": pl.Int64,
          "study_mean": pl.Float64, "control_mean": pl.Float64, "diff_vs_control": pl.Float64,
          "ci_low": pl.Float64, "ci_high": pl.Float64, "t": pl.Float64, "p_t": pl.Float64,
          "p_holm": pl.Float64, "flag": pl.String}


def versus_controls(df: pl.DataFrame, groups: tuple[str, ...], value: str) -> pl.DataFrame:
    """``df``: one row per group, run and step with ``value`` and ``prune_ratio``, its ``chain``
    filled (``analysis.stats.with_chain``); ``groups`` name the chain among the grouping columns.
    One row per model group, control and step > 0 that the study's chain and the control share."""
    keys = [g for g in groups if g != "chain"]
    schema = {k: df.schema[k] for k in keys} | SCHEMA
    rows = []
    pruned = df.filter((pl.col("step") > 0) & pl.col("chain").is_in([STUDY_CHAIN, *CONTROLS]))
    parts = pruned.partition_by(keys, as_dict=True, maintain_order=True) if pruned.height else {}
    for key, part in sorted(parts.items(), key=lambda kv: tuple(str(v) for v in kv[0])):
        group = dict(zip(keys, key))
        study = part.filter(pl.col("chain") == STUDY_CHAIN)
        for control in CONTROLS:
            other = part.filter(pl.col("chain") == control)
            group_rows = []
            for step in sorted(set(study["step"].to_list()) & set(other["step"].to_list())):
                a, b = (rows.filter(pl.col("step") == step).sort("run") for rows in (study, other))
                x, base = paired.aligned(a["run"].to_numpy(), a[value].to_numpy(),
                                         b["run"].to_numpy(), b[value].to_numpy())
                diff = paired.differences(x, base)
                low, high = paired.mean_ci(diff)
                t, p_t = paired.t_test(diff)
                group_rows.append({
                    **group, "control": control, "step": step, "prune_ratio": a["prune_ratio"].mean(), "n": len(diff),
                    "study_mean": paired.number(np.mean(x)) if len(x) else None,
                    "control_mean": paired.number(np.mean(base)) if len(base) else None,
                    "diff_vs_control": paired.number(np.mean(diff)) if len(diff) else None,
                    "ci_low": low, "ci_high": high, "t": t, "p_t": p_t, "flag": paired.flag(diff)})
            for row, p in zip(group_rows, paired.holm([r["p_t"] for r in group_rows])):
                row["p_holm"] = p
            rows += group_rows
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)
