"""Tables for readers: column names as headers with units, numbers rounded to what they can
carry, p-values formatted (``< 0.001``), and LaTeX (booktabs) beside the CSV.

Only what is shown changes: the Parquet and CSV tables keep the full values and the column
names the code uses. ``readable(table, unit)`` returns a frame of strings; ``unit`` is the
metric's (``%`` for accuracy, empty for IROF), put into the headers of value columns (and
percentage points into those of differences).
"""
from __future__ import annotations

import math
from pathlib import Path

import polars as pl

from core.atomic import atomic_file

DASH = "–"
P_COLUMNS = {"p", "p_t", "p_wilcoxon", "p_holm", "p_wilcoxon_holm", "p_tost", "p_gg", "p_unc", "p_bonf"}
# statistics without units, shown to 2 decimals (3 for ε, whose bounds 1/(k−1) and 1 matter)
PLAIN = {"cohens_d": 2, "hedges_g": 2, "t": 2, "T": 2, "F": 2, "W": 1, "epsilon_gg": 3, "partial_eta_sq": 3}
RATIOS = {"prune_ratio", "prune_ratio_A", "prune_ratio_B", "kept_up_to_ratio"}  # fractions shown as %
DIFFERENCE_UNITS = {"%": "points"}  # a difference of two percentages is in percentage points
# ``{u}``: the unit of the metric's values, ``{d}``: of differences between them
HEADERS = {
    "model": "model", "chain": "chain", "stream": "stream", "fusion": "fusion", "method": "saliency method",
    "split": "split", "step": "step", "source": "source", "endpoint": "endpoint", "clips_of": "clips",
    # prune_ratio is the step's pruning ratio, the same for every chain: a finetune_only row at a
    # step removed nothing (its channels_removed_% says 0), it was fine-tuned as that step is
    "prune_ratio": "step's pruning ratio (%)", "prune_ratio_A": "A: step's pruning ratio (%)",
    "prune_ratio_B": "B: step's pruning ratio (%)", "channels_removed_%": "channels removed (%)",
    "params_removed_%": "parameters removed (%)", "flops_removed_%": "FLOPs removed (%)",
    "runs": "runs", "n": "runs (n)", "n_A": "runs A", "n_B": "runs B", "clips": "clips",
    "mean": "mean{u}", "std": "sd{u}", "ci_low": "95 % CI low{u}", "ci_high": "95 % CI high{u}",
    "mean_A": "mean A{u}", "mean_B": "mean B{u}",
    "control": "control", "study_mean": "study's chain, mean{u}", "control_mean": "control, mean{u}",
    "diff_vs_control": "Δ study − control{d}",
    "mean_diff": "Δ vs step 0{d}", "sd_diff": "sd of Δ{d}", "ci90_low": "90 % CI low{d}",
    "ci90_high": "90 % CI high{d}", "margin": "margin ±{d}", "mde": "MDE, power 0.8{d}",
    "p_tost": "TOST p", "equivalent": "equivalent", "flag": "note", "interval": "note",
    "cohens_d": "Cohen's d_z", "hedges_g": "Hedges' g", "W": "Wilcoxon W", "p_wilcoxon": "Wilcoxon p",
    "p_wilcoxon_holm": "Wilcoxon p, Holm", "t": "t", "p_t": "t-test p", "p_holm": "t-test p, Holm",
    "T": "t", "dof": "df", "p_unc": "p, uncorrected", "p_bonf": "p, Bonferroni",
    "F": "F", "df_num": "df steps", "df_den": "df error", "p": "p", "epsilon_gg": "GG ε", "p_gg": "p, GG",
    "SS": "SS", "DF": "df", "MS": "MS", "partial_eta_sq": "partial η²",
    "video_accuracy_mean": "video accuracy (%), mean", "video_accuracy_sd": "video accuracy (%), sd",
    "clip_accuracy_mean": "clip accuracy (%), mean",
    "fewer_runs": "fewer runs than the others", "steps_tested": "steps tested", "kept_up_to_step": "kept up to step",
    "kept_up_to_ratio": "kept up to (step's pruning ratio, %)", "stopped_at_step": "first step not shown",
    "stop_reason": "why it stopped",
    "median_mean": "per-run median, mean{u}", "median_sd": "per-run median, sd{u}",
    "mean_outlier_sensitive": "mean of per-run means (outlier-sensitive){u}",
}


def header(column: str, unit: str = "", of_difference: bool = False) -> str:
    """The reader's name of a column; ``{u}`` becomes `` (unit)`` where the table has one."""
    if column.endswith("_mean_sd"):
        return f"{column.removesuffix('_mean_sd').replace('_', ' ')}{_unit(column)}, mean ± sd"
    if column.endswith("_p_vs_step0"):
        return f"{column.removesuffix('_p_vs_step0').replace('_', ' ')}: p vs step 0"
    if column.endswith("_diff_ci"):
        return f"{column.removesuffix('_diff_ci').replace('_', ' ')}: Δ vs step 0 [95 % CI]"
    text = HEADERS.get(column, column.replace("_", " "))
    if of_difference and column in ("ci_low", "ci_high"):  # the interval of Δ, not of the mean
        text = "Δ: " + text.replace("{u}", "{d}")
    difference = DIFFERENCE_UNITS.get(unit, unit)
    return text.replace("{u}", f" ({unit})" if unit else "").replace("{d}", f" ({difference})" if difference else "")


def _unit(column: str) -> str:
    return " (%)" if "accuracy" in column or "top5" in column else ""


def p_value(p: float | None) -> str:
    """Three decimals, ``< 0.001`` below that (more digits claim a precision 5 runs lack)."""
    if p is None or not math.isfinite(p):
        return DASH
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def rounded(x: float) -> str:
    """Three significant digits (at most 4 decimals, none above 1000), e.g. 61.2, 0.0123, 1234."""
    if not math.isfinite(x):
        return DASH
    if x == 0:
        return "0"
    decimals = min(4, max(0, 2 - math.floor(math.log10(abs(x)))))
    return f"{x:.{decimals}f}"


def cell(column: str, value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if column in P_COLUMNS or column.endswith("_p_vs_step0"):
            return p_value(value)
        if column in RATIOS:
            return f"{value * 100:.1f}"
        if column in PLAIN:
            return f"{value:.{PLAIN[column]}f}"
        if column.endswith("_%"):
            return f"{value:.1f}"
        return rounded(value)
    return str(value)


def readable(table: pl.DataFrame, unit: str = "") -> pl.DataFrame:
    """Strings for display: readable headers, rounded numbers, formatted p, "–" for null."""
    columns = {}
    for column in table.columns:
        name = header(column, unit, of_difference=bool({"mean_diff", "diff_vs_control"} & set(table.columns)))
        while name in columns:  # two columns the same header (never silently dropped)
            name += " "
        columns[name] = [cell(column, v) for v in table[column].to_list()]
    return pl.DataFrame(columns, schema={c: pl.String for c in columns})


LATEX_SYMBOLS = {"<": "$<$", ">": "$>$", "≥": "$\\geq$", "Δ": "$\\Delta$", "ε": "$\\varepsilon$",
                 "η²": "$\\eta^2$", "±": "$\\pm$", "−": "$-$", "–": "--", "×": "$\\times$",
                 "÷": "$\\div$", "ρ": "$\\rho$"}


def latex(table: pl.DataFrame) -> str:
    """A booktabs table (``\\toprule``/``\\midrule``/``\\bottomrule``; needs ``\\usepackage{booktabs}``)
    of a table of strings, every cell and header LaTeX-escaped (pandas' Styler)."""
    styler = (table.to_pandas().style.hide(axis="index").format(escape="latex")
              .format_index(escape="latex", axis=1))
    text = styler.to_latex(hrules=True, column_format="l" * table.width)
    for symbol, command in LATEX_SYMBOLS.items():  # math symbols pdfLaTeX's default fonts lack
        text = text.replace(symbol, command)
    return text


def write_latex(table: pl.DataFrame, path: Path, unit: str = "") -> Path:
    with atomic_file(path) as tmp:
        tmp.write_text(latex(readable(table, unit)))
    return path
