"""Can the data support "no change"? Equivalence of each pruned step with step 0, and how far
along the pruning ratio that equivalence holds.

- ``equivalence(df, groups, value, margin)``: per group and step > 0, the paired mean
  difference against step 0 (runs paired) with its 95 % t-interval, TOST against ±margin
  (statsmodels ``ttost_paired``; equivalent when p_tost < α, i.e. the 90 % interval lies inside
  ±margin), and the minimal detectable effect of a two-sided paired t-test (power 0.8).
- ``fixed_sequence(table)``: per group, the steps tested in order of increasing ratio, each at
  the full α, stopping at the first that is not shown equivalent (fixed-sequence testing: the
  family-wise error over the sequence stays at α without any penalty, because a hypothesis is
  only tested once all before it were rejected). The answer: "kept up to which ratio".

Margins (``stats.equivalence_margin`` in the config):

- ``accuracy``: 1 (percentage point), the issue's default.
- ``irof``: 0.05 on IROF ÷ the clip's segment count. IROF is an area over a curve of
  p(x_k)/p(x) with one unit per removed segment, so dividing by the clip's segments puts every
  clip on one scale where 0 is "removing segments changes nothing" and 1 is "the first segment
  already removes all evidence"; 0.05 is 5 % of that span (as 1 point is 1 % of accuracy's),
  the same for clips with many or few segments. A convention, stated so that it can be argued
  with: set another in the config if the field settles on one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from analysis import paired

DEFAULT_MARGINS = {"accuracy": 1.0, "irof": 0.05}
MARGIN_UNITS = {"accuracy": "percentage points", "irof": "IROF ÷ segments"}


@dataclass(frozen=True)
class Primary:
    """The confirmatory endpoint: one metric of one model and chain (the rest is secondary)."""
    metric: str = "video_accuracy"
    model: str = "spatial"  # spatial | temporal | a fusion method
    chain: str = "slimming"

    def text(self) -> str:
        return f"{self.metric.replace('_', ' ')} of the {self.model} model, {self.chain} chain"


@dataclass(frozen=True)
class Settings:
    margins: dict
    primary: Primary
    alpha: float = paired.ALPHA

    @classmethod
    def from_config(cls, config: dict | None) -> "Settings":
        """From the experiment config's ``stats`` section (a dict; absent keys take the defaults)."""
        section = (config or {}).get("stats") or {}
        margins = {**DEFAULT_MARGINS, **(section.get("equivalence_margin") or {})}
        for key, value in margins.items():
            if key not in DEFAULT_MARGINS:
                raise ValueError(f"stats.equivalence_margin.{key}: not a metric (allowed: {sorted(DEFAULT_MARGINS)})")
            if not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"stats.equivalence_margin.{key}: {value!r} must be a number > 0")
        return cls(margins, Primary(**(section.get("primary") or {})))


SCHEMA = {"step": pl.Int64, "prune_ratio": pl.Float64, "n": pl.Int64, "mean_diff": pl.Float64,
          "sd_diff": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
          "ci90_low": pl.Float64, "ci90_high": pl.Float64, "margin": pl.Float64,
          "p_tost": pl.Float64, "equivalent": pl.Boolean, "mde": pl.Float64, "flag": pl.String}


def equivalence_row(diff: np.ndarray, margin: float, alpha: float = paired.ALPHA) -> dict:
    """The statistics of one step's paired differences against ±margin."""
    p = paired.tost(diff, margin)
    low, high = paired.mean_ci(diff, 0.95)
    low90, high90 = paired.mean_ci(diff, 1 - 2 * alpha)
    return {"n": len(diff), "mean_diff": float(np.mean(diff)) if len(diff) else None,
            "sd_diff": paired.sd(diff), "ci_low": low, "ci_high": high, "ci90_low": low90,
            "ci90_high": high90, "margin": float(margin), "p_tost": p,
            "equivalent": None if p is None else bool(p < alpha),
            "mde": paired.minimal_detectable_effect(diff, alpha), "flag": paired.flag(diff)}


def fixed_sequence(table: pl.DataFrame, groups: tuple[str, ...], alpha: float = paired.ALPHA) -> pl.DataFrame:
    """Per group: steps in increasing ratio, each tested at α until the first that is not shown
    equivalent (an untestable step - null p_tost - stops the sequence too). ``kept_up_to_step``
    / ``_ratio``: the last step shown equivalent (null: not even the first); ``stopped_at_step``:
    the first step not shown (null: all were); ``stop_reason``."""
    rows = []
    keys = [g for g in groups if g in table.columns]
    for part in table.partition_by(keys, maintain_order=True) if table.height else []:
        kept, stop, reason = None, None, ""
        for row in part.sort("prune_ratio", "step").iter_rows(named=True):
            if row["p_tost"] is not None and row["p_tost"] < alpha:
                kept = row
                continue
            stop = row
            reason = (f"not testable ({row['flag'] or 'no pairs'})" if row["p_tost"] is None
                      else f"p_tost = {row['p_tost']:.3g} ≥ {alpha:g}")
            break
        rows.append({**{k: part[k][0] for k in keys}, "steps_tested": part.height if stop is None else
                     part.sort("prune_ratio", "step")["step"].to_list().index(stop["step"]) + 1,
                     "kept_up_to_step": kept["step"] if kept else None,
                     "kept_up_to_ratio": kept["prune_ratio"] if kept else None,
                     "stopped_at_step": stop["step"] if stop else None, "stop_reason": reason,
                     "margin": part["margin"][0], "flag": "; ".join(sorted({f for f in part["flag"] if f}))})
    schema = {k: table.schema[k] for k in keys} | {
        "steps_tested": pl.Int64, "kept_up_to_step": pl.Int64, "kept_up_to_ratio": pl.Float64,
        "stopped_at_step": pl.Int64, "stop_reason": pl.String, "margin": pl.Float64, "flag": pl.String}
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


def mark_primary(kept: pl.DataFrame, metric: str, primary: Primary) -> pl.DataFrame:
    """``endpoint``: primary for the configured metric, model and chain, else secondary."""
    if kept.is_empty():
        return kept.with_columns(pl.lit(None, dtype=pl.String).alias("endpoint"))
    model = pl.coalesce(pl.col("fusion"), pl.col("stream")) if "fusion" in kept.columns else pl.col("stream")
    is_primary = ((pl.lit(metric) == primary.metric) & (model == primary.model)
                  & (pl.col("chain") == primary.chain))
    return kept.with_columns(pl.when(is_primary).then(pl.lit("primary")).otherwise(pl.lit("secondary"))
                             .alias("endpoint"))
