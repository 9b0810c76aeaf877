"""Statistics of a metric across pruning steps, from the results store alone.

Per group (experiment, stream, fusion method, split for accuracy; experiment, stream,
saliency method for IROF) every pruning step is compared with the unpruned step 0, runs
paired by their ``run`` index. Tables (each written as Parquet and CSV):

- ``summary``: per step n, mean, std (ddof 1), 95 % t-interval.
- ``effects``: per step > 0, over the runs present at both steps: mean and sd of
  x_step − x_0, paired Cohen's d_z (positive when pruning raises the metric), Wilcoxon
  signed-rank on the pairs (two-sided; scipy's ``method="auto"``: the exact null
  distribution for n ≤ 50, a sign-flip permutation test if there are ties or zero
  differences, exact for n ≤ 13; normal approximation above 50), paired t-test.
- ``anova``: one-way between-groups ANOVA across steps (factor and residual rows: SS, DF,
  MS, F, p, partial eta squared).
- ``posthoc``: every pair of steps A < B, two-sample Student t-test of B against A
  (T, dof, p uncorrected, Bonferroni p capped at 1) and Hedges' g (B − A).

Paired analysis (runs are the repeated measure; the report leads with it):

- ``anova_rm``: one-way repeated-measures ANOVA over steps on the runs present at every
  step (F, df_num, df_den, p) and the Greenhouse–Geisser epsilon (double-centred step
  covariance) with its corrected p ``p_gg``; equal to statsmodels' ``AnovaRM``.
- ``posthoc_paired``: each step > 0 against step 0, runs paired: paired t (scipy) and exact
  Wilcoxon signed-rank (permutation test when differences tie or are zero), each
  Holm-adjusted over the group's steps (statsmodels ``multipletests``), beside the mean
  difference, its 95 % t-interval and the minimal detectable effect (paired t, power 0.8).
  With n = 5 the exact two-sided Wilcoxon p is at least 0.0625.
- ``equivalence``: TOST of each step against step 0 at ±``stats.equivalence_margin``
  (``analysis.equivalence``); ``kept``: fixed-sequence testing along increasing ratio, one
  "kept up to" answer per model and chain, marked primary or secondary (``stats.primary``).
  IROF's equivalence is on the per-run median of IROF ÷ the clip's segment count.
- ``vs_control`` (where a control chain ran): the study's chain against each control at the
  steps both have, runs paired (``analysis.controls``): is a change the pruning's own?

Every group also has a ``chain`` (slimming | a control, issue 27; missing = slimming). Paired
differences are rounded (``analysis.paired``): equal differences give null t, d_z and p with
the flag ``zero spread``; fewer than 3 pairs are flagged ``n < 3`` in every paired table.

``summary``/``effects``/``anova``/``posthoc`` above reproduce the original study's
analysis (seed-comparable, steps treated as independent groups in ``anova``/``posthoc``).

IROF enters as one value per run and step: the median over the run's clips (a misclassified
clip's p(x_k)/p(x) can explode, which a mean would follow). ``irof_by_correctness``: per run
and step, for all clips and split into correctly and incorrectly classified ones, the number
of clips, the median and the (outlier-sensitive) mean.

Fewer than 2 observations leave the descriptive columns and no tests, with a warning.

``python -m analysis.stats --results DIR --out DIR [--metric video_accuracy]``
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import polars as pl
from scipy import stats

from core.cli import HelpFormatter

from analysis import controls, equivalence, paired
from analysis.paired import holm
from analysis.paired import number as _number
from core.atomic import atomic_file
from core.results import DEFAULT_CHAIN as STUDY_CHAIN  # rows written before chains existed are the study's
from core.results import ResultsSchemaError, read_table

ACCURACY_GROUPS = ("experiment", "stream", "fusion", "chain", "split")
IROF_GROUPS = ("experiment", "stream", "chain", "method")
METRICS = ("video_accuracy", "clip_accuracy", "video_top5", "loss")
TABLES = ("summary", "effects", "anova", "posthoc", "anova_rm", "posthoc_paired", "equivalence", "kept")


def with_chain(df: pl.DataFrame) -> pl.DataFrame:
    """``chain`` present and filled: rows without one (older files, a store without the column)
    are the study's ``slimming`` chain. A control chain without its own step-0 rows shares the
    study's unpruned models: their step-0 rows are copied to it, so every chain is paired
    against the same baseline."""
    df = (df.with_columns(pl.col("chain").fill_null(STUDY_CHAIN)) if "chain" in df.columns
          else df.with_columns(pl.lit(STUDY_CHAIN).alias("chain")))
    if df.is_empty() or "step" not in df.columns:
        return df
    chains = df["chain"].unique().to_list()
    with_base = df.filter(pl.col("step") == 0)["chain"].unique().to_list()
    base = df.filter((pl.col("step") == 0) & (pl.col("chain") == STUDY_CHAIN))
    copies = [base.with_columns(pl.lit(c).alias("chain")) for c in chains if c not in with_base]
    return pl.concat([df, *copies]) if copies and base.height else df


def _by_group(df: pl.DataFrame, groups: tuple[str, ...]):
    """(group values as a dict, the group's rows) in a stable order."""
    for key, part in sorted(df.partition_by(list(groups), as_dict=True, maintain_order=True).items(),
                            key=lambda kv: tuple(str(v) for v in kv[0])):
        yield dict(zip(groups, key)), part


def _steps(part: pl.DataFrame, value: str) -> dict[int, tuple[float, np.ndarray, np.ndarray]]:
    """step -> (prune ratio, runs, values), runs sorted."""
    out = {}
    for (step,), rows in sorted(part.partition_by("step", as_dict=True).items()):
        rows = rows.sort("run")
        out[step] = (float(rows["prune_ratio"].mean()), rows["run"].to_numpy(), rows[value].to_numpy())
    return out


def _group_label(group: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in group.items() if v is not None)


def _frame(rows: list[dict], columns: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=columns, orient="row") if rows else pl.DataFrame(schema=columns)


def _group_schema(df: pl.DataFrame, groups: tuple[str, ...]) -> dict[str, pl.DataType]:
    return {g: df.schema[g] for g in groups}


FEWER_RUNS = "fewer_runs"  # flag column: this cell averages over fewer runs than the table's others


def flag_fewer_runs(frame: pl.DataFrame, runs: str) -> pl.DataFrame:
    """``frame`` with ``fewer_runs`` beside its ``runs`` column: True where a cell has fewer runs
    than the most any cell of the table has (a run's rows lost, still missing or never made:
    its mean and sd rest on less than the others'). Readers must say so, never average silently."""
    most = frame[runs].max() if frame.height else None
    flag = (pl.col(runs) < most) if most is not None else pl.lit(False)
    at = frame.columns.index(runs) + 1
    return frame.insert_column(at, frame.select(flag.fill_null(True).alias(FEWER_RUNS)).to_series())


def summary(df: pl.DataFrame, groups: tuple[str, ...], value: str) -> pl.DataFrame:
    df = with_chain(df)
    rows = []
    for group, part in _by_group(df, groups):
        for step, (ratio, _, x) in _steps(part, value).items():
            n, mean = len(x), float(np.mean(x))
            sd = float(np.std(x, ddof=1)) if n > 1 else None
            half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) if n > 1 else None
            rows.append({**group, "step": step, "prune_ratio": ratio, "n": n, "mean": mean, "std": sd,
                         "ci_low": _number(mean - half) if half is not None else None,
                         "ci_high": _number(mean + half) if half is not None else None,
                         "flag": paired.FEW if n < paired.MIN_PAIRS else ""})
    return flag_fewer_runs(_frame(rows, _group_schema(df, groups) | {
        "step": pl.Int64, "prune_ratio": pl.Float64, "n": pl.Int64, "mean": pl.Float64,
        "std": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64, "flag": pl.String}), "n")


def _paired_tests(diff: np.ndarray) -> dict:
    """Cohen's d_z, Wilcoxon signed-rank (scipy 'auto', as the original study) and paired t of
    the rounded differences (``analysis.paired``): null without spread, never an extreme number."""
    w, p_w = paired.wilcoxon(diff, method="auto")
    t, p_t = paired.t_test(diff)
    return {"cohens_d": paired.cohens_dz(diff), "W": w, "p_wilcoxon": p_w, "t": t, "p_t": p_t}


def _paired_steps(group: dict, part: pl.DataFrame, value: str, what: str):
    """(step, ratio, rounded differences against step 0 over the shared runs) per step > 0."""
    steps = _steps(part, value)
    if 0 not in steps:
        warnings.warn(f"{_group_label(group)}: no unpruned step 0, no {what}", stacklevel=3)
        return
    _, base_runs, base = steps[0]
    for step, (ratio, runs, x) in steps.items():
        if step:
            yield step, ratio, paired.differences(*paired.aligned(runs, x, base_runs, base))


def effects(df: pl.DataFrame, groups: tuple[str, ...], value: str) -> pl.DataFrame:
    df = with_chain(df)
    rows = []
    for group, part in _by_group(df, groups):
        for step, ratio, diff in _paired_steps(group, part, value, "paired effects"):
            n = len(diff)
            row = {**group, "step": step, "prune_ratio": ratio, "n": n,
                   "mean_diff": float(np.mean(diff)) if n else None, "sd_diff": paired.sd(diff)}
            if n < 2:
                warnings.warn(f"{_group_label(group)}, step {step}: {n} paired run(s), "
                              "descriptive statistics only", stacklevel=2)
            row |= _paired_tests(diff) | {"flag": paired.flag(diff)}
            rows.append(row)
    return _frame(rows, _group_schema(df, groups) | {
        "step": pl.Int64, "prune_ratio": pl.Float64, "n": pl.Int64, "mean_diff": pl.Float64,
        "sd_diff": pl.Float64, "cohens_d": pl.Float64, "W": pl.Float64, "p_wilcoxon": pl.Float64,
        "t": pl.Float64, "p_t": pl.Float64, "flag": pl.String})


def anova(df: pl.DataFrame, groups: tuple[str, ...], value: str) -> pl.DataFrame:
    """Between-groups one-way ANOVA. Own code: scipy's ``f_oneway`` gives F and p only, and the
    table needs SS, MS and partial η² (the tests check F and p against scipy)."""
    df = with_chain(df)
    rows = []
    for group, part in _by_group(df, groups):
        samples = [x for _, _, x in _steps(part, value).values()]
        n, k = sum(len(x) for x in samples), len(samples)
        if k < 2 or n - k < 1:
            warnings.warn(f"{_group_label(group)}: {k} step(s), {n} value(s): no ANOVA", stacklevel=2)
            continue
        grand = np.mean(np.concatenate(samples))
        ss_factor = sum(len(x) * (np.mean(x) - grand) ** 2 for x in samples)
        ss_resid = sum(((x - np.mean(x)) ** 2).sum() for x in samples)
        df_factor, df_resid = k - 1, n - k
        ms_factor, ms_resid = ss_factor / df_factor, ss_resid / df_resid
        f = ms_factor / ms_resid if ms_resid > 0 else math.nan
        total = ss_factor + ss_resid
        rows.append({**group, "source": "step", "n": n, "SS": float(ss_factor), "DF": df_factor,
                     "MS": float(ms_factor), "F": _number(f), "p": _number(stats.f.sf(f, df_factor, df_resid)),
                     "partial_eta_sq": float(ss_factor / total) if total > 0 else None})
        rows.append({**group, "source": "residual", "n": n, "SS": float(ss_resid), "DF": df_resid,
                     "MS": float(ms_resid), "F": None, "p": None, "partial_eta_sq": None})
    return _frame(rows, _group_schema(df, groups) | {
        "source": pl.String, "n": pl.Int64, "SS": pl.Float64, "DF": pl.Int64, "MS": pl.Float64,
        "F": pl.Float64, "p": pl.Float64, "partial_eta_sq": pl.Float64})


def hedges_g(a: np.ndarray, b: np.ndarray) -> float | None:
    """(mean b − mean a) / pooled sd, times the small-sample correction 1 − 3 / (4(n_a + n_b) − 9).
    Own code: neither scipy nor statsmodels has Hedges' g (pingouin does, with this formula)."""
    n_a, n_b = len(a), len(b)
    pooled = math.sqrt(((n_a - 1) * np.var(a, ddof=1) + (n_b - 1) * np.var(b, ddof=1)) / (n_a + n_b - 2))
    if pooled == 0:
        return None
    return float((np.mean(b) - np.mean(a)) / pooled * (1 - 3 / (4 * (n_a + n_b) - 9)))


def posthoc(df: pl.DataFrame, groups: tuple[str, ...], value: str) -> pl.DataFrame:
    df = with_chain(df)
    rows = []
    for group, part in _by_group(df, groups):
        steps = _steps(part, value)
        pairs = list(itertools.combinations(sorted(steps), 2))
        for a, b in pairs:
            (ratio_a, _, x_a), (ratio_b, _, x_b) = steps[a], steps[b]
            row = {**group, "A": a, "B": b, "prune_ratio_A": ratio_a, "prune_ratio_B": ratio_b,
                   "n_A": len(x_a), "n_B": len(x_b), "mean_A": float(np.mean(x_a)),
                   "mean_B": float(np.mean(x_b)), "T": None, "dof": None, "p_unc": None,
                   "p_bonf": None, "hedges_g": None}
            if min(len(x_a), len(x_b)) >= 2:
                t = stats.ttest_ind(x_b, x_a, equal_var=True)
                p = _number(t.pvalue)
                row |= {"T": _number(t.statistic), "dof": len(x_a) + len(x_b) - 2, "p_unc": p,
                        "p_bonf": min(1.0, p * len(pairs)) if p is not None else None,
                        "hedges_g": hedges_g(x_a, x_b)}
            rows.append(row)
    return _frame(rows, _group_schema(df, groups) | {
        "A": pl.Int64, "B": pl.Int64, "prune_ratio_A": pl.Float64, "prune_ratio_B": pl.Float64,
        "n_A": pl.Int64, "n_B": pl.Int64, "mean_A": pl.Float64, "mean_B": pl.Float64,
        "T": pl.Float64, "dof": pl.Int64, "p_unc": pl.Float64, "p_bonf": pl.Float64,
        "hedges_g": pl.Float64})


def _complete_runs(part: pl.DataFrame, value: str) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(steps, runs, runs × steps matrix) over the runs that have a value at every step."""
    steps = _steps(part, value)
    runs = None
    for _, r, _ in steps.values():
        runs = set(r.tolist()) if runs is None else runs & set(r.tolist())
    runs = sorted(runs or ())
    matrix = np.array([[dict(zip(r.tolist(), x.tolist()))[run] for _, r, x in steps.values()]
                       for run in runs], dtype=float).reshape(len(runs), len(steps))
    return sorted(steps), np.array(runs), matrix


def greenhouse_geisser(matrix: np.ndarray) -> float:
    """Greenhouse–Geisser epsilon from the double-centred step covariance (runs × steps).
    Own code: statsmodels' ``AnovaRM`` has no sphericity correction, and pingouin (which has)
    would bring seaborn and pandas-flavor into the core for one formula; the tests check it
    against ``pingouin.epsilon`` at interior values."""
    k = matrix.shape[1]
    centre = np.eye(k) - np.ones((k, k)) / k
    s = centre @ np.cov(matrix, rowvar=False) @ centre
    return float(np.trace(s) ** 2 / ((k - 1) * np.trace(s @ s)))


def anova_rm(df: pl.DataFrame, groups: tuple[str, ...], value: str) -> pl.DataFrame:
    """One-way repeated-measures ANOVA over steps, runs as subjects (runs complete at every step),
    with the Greenhouse–Geisser corrected p; equal to statsmodels' ``AnovaRM`` on those rows
    (own code for the sums of squares the GG correction needs; AnovaRM returns F and p only)."""
    df = with_chain(df)
    rows = []
    for group, part in _by_group(df, groups):
        _, runs, m = _complete_runs(part, value)
        n, k = m.shape
        if n < 2 or k < 2:
            warnings.warn(f"{_group_label(group)}: {n} complete run(s) over {k} step(s): "
                          "no repeated-measures ANOVA", stacklevel=2)
            continue
        grand = m.mean()
        ss_step = n * ((m.mean(axis=0) - grand) ** 2).sum()
        ss_run = k * ((m.mean(axis=1) - grand) ** 2).sum()
        ss_error = ((m - grand) ** 2).sum() - ss_step - ss_run
        df_num, df_den = k - 1, (k - 1) * (n - 1)
        f = (ss_step / df_num) / (ss_error / df_den) if ss_error > 0 else math.nan
        eps = greenhouse_geisser(m) if ss_error > 0 else math.nan
        rows.append({**group, "n": n, "F": _number(f), "df_num": df_num, "df_den": df_den,
                     "p": _number(stats.f.sf(f, df_num, df_den)), "epsilon_gg": _number(eps),
                     "p_gg": _number(stats.f.sf(f, eps * df_num, eps * df_den))})
    return _frame(rows, _group_schema(df, groups) | {
        "n": pl.Int64, "F": pl.Float64, "df_num": pl.Int64, "df_den": pl.Int64, "p": pl.Float64,
        "epsilon_gg": pl.Float64, "p_gg": pl.Float64})


def posthoc_paired(df: pl.DataFrame, groups: tuple[str, ...], value: str) -> pl.DataFrame:
    """Each step > 0 against step 0 over the runs present at both: the mean difference with its
    95 % t-interval and the minimal detectable effect (paired t, power 0.8), paired t and exact
    Wilcoxon, both Holm-adjusted over the steps of the group. With n = 5 pairs the smallest
    exact two-sided Wilcoxon p is 2/32 = 0.0625, so it cannot fall below 0.05."""
    df = with_chain(df)
    rows = []
    for group, part in _by_group(df, groups):
        group_rows = []
        for step, ratio, diff in _paired_steps(group, part, value, "paired post-hoc"):
            low, high = paired.mean_ci(diff)
            t, p_t = paired.t_test(diff)
            w, p_w = paired.wilcoxon(diff)
            group_rows.append({**group, "step": step, "prune_ratio": ratio, "n": len(diff),
                               "mean_diff": float(np.mean(diff)) if len(diff) else None,
                               "ci_low": low, "ci_high": high, "mde": paired.minimal_detectable_effect(diff),
                               "t": t, "p_t": p_t, "W": w, "p_wilcoxon": p_w, "flag": paired.flag(diff)})
        for key, adjusted in (("p_holm", holm([r["p_t"] for r in group_rows])),
                              ("p_wilcoxon_holm", holm([r["p_wilcoxon"] for r in group_rows]))):
            for row, p in zip(group_rows, adjusted):
                row[key] = p
        rows += group_rows
    return _frame(rows, _group_schema(df, groups) | {
        "step": pl.Int64, "prune_ratio": pl.Float64, "n": pl.Int64, "mean_diff": pl.Float64,
        "ci_low": pl.Float64, "ci_high": pl.Float64, "mde": pl.Float64,
        "t": pl.Float64, "p_t": pl.Float64, "W": pl.Float64, "p_wilcoxon": pl.Float64,
        "flag": pl.String, "p_holm": pl.Float64, "p_wilcoxon_holm": pl.Float64})


def equivalence_table(df: pl.DataFrame, groups: tuple[str, ...], value: str, margin: float) -> pl.DataFrame:
    """``<metric>_equivalence``: per group and step > 0, TOST of the paired difference against
    ±margin with its intervals and minimal detectable effect (``analysis.equivalence``)."""
    df = with_chain(df)
    rows = [{**group, "step": step, "prune_ratio": ratio, **equivalence.equivalence_row(diff, margin)}
            for group, part in _by_group(df, groups)
            for step, ratio, diff in _paired_steps(group, part, value, "equivalence test")]
    return _frame(rows, _group_schema(df, groups) | equivalence.SCHEMA)


def irof_per_run(irof: pl.DataFrame, statistic: str = "median") -> pl.DataFrame:
    """IROF per run and step: the median over the run's clips (default; robust to the clips
    whose p(x_k)/p(x) explodes) or their ``mean`` (outlier-sensitive). One value per run, like
    accuracy, for the statistics."""
    if statistic not in ("median", "mean"):
        raise ValueError(f"statistic must be 'median' or 'mean', got {statistic!r}")
    irof = with_chain(irof)
    return (irof.group_by(*IROF_GROUPS, "run", "step")
            .agg(pl.col("prune_ratio").mean(), getattr(pl.col("irof"), statistic)(), pl.len().alias("clips"),
                 # each clip's IROF ÷ its segment count: one scale for every clip (equivalence margin)
                 getattr(pl.col("irof") / pl.col("n_segments"), statistic)().alias("irof_norm"))
            .sort(*IROF_GROUPS, "step", "run", nulls_last=True))


def with_correct(irof: pl.DataFrame) -> pl.DataFrame:
    """``correct`` filled where older files lack it: predicted == label."""
    return irof.with_columns(pl.col("correct").fill_null(pl.col("predicted") == pl.col("label")))


CLIP_SUBSETS = ("all", "correct", "incorrect")


def irof_by_correctness(irof: pl.DataFrame) -> pl.DataFrame:
    """Per run and step, for all clips and split by whether the model classified them
    correctly: clips, median and mean (outlier-sensitive) IROF."""
    irof = with_correct(with_chain(irof))
    subsets = {"all": pl.lit(True), "correct": pl.col("correct"), "incorrect": ~pl.col("correct")}
    parts = [irof.filter(keep).with_columns(pl.lit(name).alias("clips_of")) for name, keep in subsets.items()]
    order = pl.col("clips_of").replace_strict(CLIP_SUBSETS, range(len(CLIP_SUBSETS)), return_dtype=pl.Int64)
    return (pl.concat(parts).group_by(*IROF_GROUPS, "clips_of", "step", "run")
            .agg(pl.col("prune_ratio").mean(), pl.len().alias("clips"),
                 pl.col("irof").median().alias("median"), pl.col("irof").mean().alias("mean"))
            .sort(*IROF_GROUPS, order, "step", "run", nulls_last=True))


def irof_robust_summary(by_correctness: pl.DataFrame) -> pl.DataFrame:
    """Over runs, per stream, method, clip subset and step: runs, clips, the mean and sd of the
    per-run medians, and the mean of the per-run means (outlier-sensitive)."""
    order = pl.col("clips_of").replace_strict(CLIP_SUBSETS, range(len(CLIP_SUBSETS)), return_dtype=pl.Int64)
    return (by_correctness.group_by(*IROF_GROUPS, "clips_of", "step")
            .agg(pl.col("prune_ratio").mean(), pl.len().alias("runs"), pl.col("clips").sum(),
                 pl.col("median").mean().alias("median_mean"), pl.col("median").std().alias("median_sd"),
                 pl.col("mean").mean().alias("mean_outlier_sensitive"))
            .sort(*IROF_GROUPS, order, "step", nulls_last=True))


def all_tables(df: pl.DataFrame, groups: tuple[str, ...], value: str) -> dict[str, pl.DataFrame]:
    return {"summary": summary(df, groups, value), "effects": effects(df, groups, value),
            "anova": anova(df, groups, value), "posthoc": posthoc(df, groups, value),
            "anova_rm": anova_rm(df, groups, value), "posthoc_paired": posthoc_paired(df, groups, value)}


def equivalence_tables(df: pl.DataFrame, groups: tuple[str, ...], value: str, metric: str,
                       kind: str, settings: equivalence.Settings) -> dict[str, pl.DataFrame]:
    """``equivalence`` (TOST per step) and ``kept`` (fixed-sequence: up to which ratio)."""
    table = equivalence_table(df, groups, value, settings.margins[kind])
    kept = equivalence.fixed_sequence(table, groups, settings.alpha)
    return {"equivalence": table, "kept": equivalence.mark_primary(kept, metric, settings.primary)}


def _versus_controls(name: str, df: pl.DataFrame, groups: tuple[str, ...], value: str) -> dict[str, pl.DataFrame]:
    """``{name: table}`` of the study's chain against its controls, where a control has run."""
    table = controls.versus_controls(df, groups, value)
    return {name: table} if table.height else {}


def compute_tables(results_dir: Path, metric: str = "video_accuracy",
                   settings: equivalence.Settings | None = None) -> dict[str, pl.DataFrame]:
    """``<metric>_<table>`` and ``irof_<table>`` for every table that has data; ``settings``
    (margins, primary endpoint) default to ``equivalence.Settings.from_config(None)``."""
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r} is not one of {METRICS}")
    settings = settings or equivalence.Settings.from_config(None)
    out = {}
    accuracy = read_table(results_dir, "accuracy")
    if accuracy.height:
        out |= {f"{metric}_{k}": v for k, v in all_tables(accuracy, ACCURACY_GROUPS, metric).items()}
        out |= {f"{metric}_{k}": v for k, v in
                equivalence_tables(accuracy, ACCURACY_GROUPS, metric, metric, "accuracy", settings).items()}
        out |= _versus_controls(f"{metric}_vs_control", with_chain(accuracy), ACCURACY_GROUPS, metric)
    irof = read_table(results_dir, "irof")
    if irof.height:  # on the per-run median IROF; equivalence on the per-run median IROF ÷ segments
        per_run = irof_per_run(irof)
        out |= {f"irof_{k}": v for k, v in all_tables(per_run, IROF_GROUPS, "irof").items()}
        out |= {f"irof_{k}": v for k, v in
                equivalence_tables(per_run, IROF_GROUPS, "irof_norm", "irof", "irof", settings).items()}
        out |= _versus_controls("irof_vs_control", per_run, IROF_GROUPS, "irof_norm")
        out["irof_by_correctness"] = irof_by_correctness(irof)
    return out


def write_tables(tables: dict[str, pl.DataFrame], out_dir: Path) -> list[Path]:
    """Each table as ``<name>.parquet`` and ``<name>.csv``, written atomically."""
    written = []
    for name, frame in tables.items():
        for suffix, write in ((".parquet", frame.write_parquet), (".csv", frame.write_csv)):
            path = Path(out_dir) / f"{name}{suffix}"
            with atomic_file(path) as tmp:
                write(tmp)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="crossroads-stats", description=__doc__.split("\n\n")[0],
                                     epilog="exit codes: 0 tables written (or nothing to compute); "
                                            "1 a results file cannot be read (named; rerun the sweep: it sets "
                                            "the file aside and rebuilds it); 2 bad command line or no such folder", formatter_class=HelpFormatter)
    parser.add_argument("--results", type=Path, required=True, help="the results store folder")
    parser.add_argument("--out", type=Path, required=True, help="folder for the tables")
    parser.add_argument("--metric", default="video_accuracy", choices=METRICS,
                        help="accuracy column the tables are about")
    args = parser.parse_args(argv)
    if not args.results.is_dir():
        parser.error(f"{args.results}: no such results folder")
    meta = args.results.parent / "experiment.json"  # the sweep's config: stats margins, primary endpoint
    config = json.loads(meta.read_text()).get("config") if meta.is_file() else None
    try:
        settings = equivalence.Settings.from_config(config)
    except (ValueError, TypeError) as exc:
        parser.error(f"{meta}: {exc}")
    try:
        tables = compute_tables(args.results, args.metric, settings)
    except ResultsSchemaError as exc:  # a damaged or foreign file: named, with what to do
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    if not tables:
        print(f"{args.results}: no accuracy or irof rows yet, nothing to compute")
    for path in write_tables(tables, args.out):
        print(path)


if __name__ == "__main__":
    main()
