"""The report's opening table, shaped like the study's main result.

One row per model (spatial, temporal, then the fusions, in study order) and explained step:
the chain (slimming or a control), the fractions removed (``channels_removed_%`` of the prunable channels, ``params_removed_%`` and
``flops_removed_%`` of the whole model: ``analysis.pruned``), accuracy mean ± sd over runs, its
paired mean difference against step 0 with its 95 % t-interval and paired test, and for the
single streams IROF (mean ± sd over runs of each run's median over clips) with its paired test.
The paired p comes from the statistics' ``<metric>_posthoc_paired`` table (``analysis.stats``,
Holm-corrected) when the statistics have
it, else from a paired t-test computed here (uncorrected) - the only place that choice is made.
"""
from __future__ import annotations

import polars as pl

from analysis import paired
from analysis.readable import rounded
from core import config
from analysis.stats import flag_fewer_runs, irof_per_run, with_chain

CHAINS = config.CHAINS  # the study's chain first, then its controls (one order: core.config)

# measured fractions removed (accuracy columns): of the prunable channels, of all params, of all FLOPs
FRACTIONS = ("channels_removed", "params_removed", "flops_removed")


def model_label(stream: str, fusion: str | None) -> str:
    return stream if fusion is None else f"fusion: {fusion}"


# the study's order of models: the streams, then the fusions (both orders: core.config)
STUDY_ORDER = (*config.STREAMS, *(model_label("fusion", m) for m in config.FUSIONS))


def study_rank(model: str) -> tuple[int, str]:
    """Sort key: study order first, unknown models after, alphabetically."""
    return (STUDY_ORDER.index(model) if model in STUDY_ORDER else len(STUDY_ORDER), model)


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "–"
    series = pl.Series(values, dtype=pl.Float64)
    sd = series.std() if len(values) > 1 else None
    return f"{series.mean():.2f}" + ("" if sd is None else f" ± {sd:.2f}")


def paired_t_p(values: dict[int, float], base: dict[int, float]) -> float | None:
    """Two-sided paired t-test p over the runs present at both steps (None below 2 pairs or when
    the rounded differences are all equal: ``analysis.paired``)."""
    runs = sorted(set(values) & set(base))
    diff = paired.differences([values[r] for r in runs], [base[r] for r in runs])
    return paired.t_test(diff)[1]


def _paired_lookup(posthoc_paired: pl.DataFrame | None) -> dict[tuple, dict]:
    """(model, chain, step) -> the posthoc_paired row."""
    if posthoc_paired is None or posthoc_paired.is_empty():
        return {}
    table = with_chain(posthoc_paired)
    if "fusion" not in table.columns:
        table = table.with_columns(pl.lit(None, dtype=pl.String).alias("fusion"))
    if "method" in table.columns:  # IROF: one row per saliency method; the first method's
        table = table.sort("method").unique(["stream", "chain", "step"], keep="first", maintain_order=True)
    return {(model_label(r["stream"], r["fusion"]), r["chain"], int(r["step"])): r
            for r in table.iter_rows(named=True)}


def diff_ci(row: dict | None) -> str:
    """"Δ [95 % CI]" of a posthoc_paired row, 3 significant digits; "–" without one."""
    if row is None or row.get("mean_diff") is None:
        return "–"
    def fmt(x):
        return rounded(x).replace("-", "−")
    if row.get("ci_low") is None:
        return f"{fmt(row['mean_diff'])} [no interval: {row.get('flag') or 'n < 2'}]"
    return f"{fmt(row['mean_diff'])} [{fmt(row['ci_low'])}, {fmt(row['ci_high'])}]"


def _per_run(df: pl.DataFrame, model: str, chain: str, step: int, value: str) -> dict[int, float]:
    part = df.filter((pl.col("model") == model) & (pl.col("chain") == chain) & (pl.col("step") == step))
    return dict(zip(part["run"].to_list(), part[value].to_list()))


def explained_steps(accuracy: pl.DataFrame, irof: pl.DataFrame) -> list[int]:
    """Steps with IROF scores (the explained ones) plus step 0; without IROF, 0 and the last."""
    if irof.height:
        return sorted({0, *irof["step"].unique().to_list()})
    steps = accuracy["step"].unique().to_list() if accuracy.height else []
    return sorted({0, max(steps)}) if steps else []


def main_result(accuracy: pl.DataFrame, irof: pl.DataFrame, metric: str,
                posthoc_paired: pl.DataFrame | None = None,
                irof_paired: pl.DataFrame | None = None) -> tuple[pl.DataFrame, str]:
    """The summary table and which test its p columns come from."""
    acc = with_chain(accuracy).with_columns(pl.struct("stream", "fusion").map_elements(
        lambda r: model_label(r["stream"], r["fusion"]), return_dtype=pl.String).alias("model"))
    # IROF: per-run median over clips (mean over saliency methods) of each single stream
    per_run = (irof_per_run(irof).group_by("stream", "chain", "run", "step").agg(pl.col("irof").mean())
               .rename({"stream": "model"}) if irof.height else
               pl.DataFrame(schema={"model": pl.String, "chain": pl.String, "run": pl.Int64, "step": pl.Int64,
                                    "irof": pl.Float64}))
    acc_p, irof_p = _paired_lookup(posthoc_paired), _paired_lookup(irof_paired)
    test = (f"Holm-corrected paired post-hoc (statistics table {metric}_posthoc_paired)" if acc_p
            else "paired t-test over runs, uncorrected (scipy)")
    # what "% pruned" means, per model and step: prunable channels vs the whole model's params / FLOPs
    removed = acc.group_by("model", "chain", "step").agg(pl.col(*FRACTIONS).mean())
    removed = {(r["model"], r["chain"], r["step"]): r for r in removed.iter_rows(named=True)}
    rows = []
    keys = sorted(acc.select("model", "chain").unique().iter_rows(),
                  key=lambda k: (study_rank(k[0]), CHAINS.index(k[1]) if k[1] in CHAINS else len(CHAINS), k[1]))
    for model, chain in keys:
        base_acc, base_irof = _per_run(acc, model, chain, 0, metric), _per_run(per_run, model, chain, 0, "irof")
        for step in explained_steps(accuracy, irof):
            values = _per_run(acc, model, chain, step, metric)
            if not values:
                continue
            irofs = _per_run(per_run, model, chain, step, "irof")
            acc_row, irof_row = acc_p.get((model, chain, step)), irof_p.get((model, chain, step))
            rows.append({
                "model": model, "chain": chain, "step": step,
                **{f"{c}_%": round(100 * (removed[(model, chain, step)][c] or 0.0), 1) for c in FRACTIONS},
                "runs": len(values),
                f"{metric}_mean_sd": _mean_sd(list(values.values())),
                f"{metric}_diff_ci": "–" if step == 0 else diff_ci(acc_row),
                f"{metric}_p_vs_step0": None if step == 0 else
                acc_row["p_holm"] if acc_row else paired_t_p(values, base_acc),
                "irof_mean_sd": _mean_sd(list(irofs.values())),
                "irof_diff_ci": "–" if step == 0 or not irofs else diff_ci(irof_row),
                "irof_p_vs_step0": None if step == 0 or not irofs else
                irof_row["p_holm"] if irof_row else paired_t_p(irofs, base_irof),
            })
    schema = {"model": pl.String, "chain": pl.String, "step": pl.Int64, **{f"{c}_%": pl.Float64 for c in FRACTIONS},
              "runs": pl.Int64, f"{metric}_mean_sd": pl.String, f"{metric}_diff_ci": pl.String,
              f"{metric}_p_vs_step0": pl.Float64, "irof_mean_sd": pl.String, "irof_diff_ci": pl.String,
              "irof_p_vs_step0": pl.Float64}
    return flag_fewer_runs(pl.DataFrame(rows, schema=schema), "runs"), test
