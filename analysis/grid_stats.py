"""Statistics and the grid figure of the ``faithfulness`` table (issue 30).

Per (stream, chain, method, metric) the unit is the run, as for accuracy and IROF: each run's
median over its clips at each step (``score`` and ``score_random``). Each pruned step k > 0 is
compared with step 0 over the runs present at both:

- paired t-test of the run medians (difference = step k − step 0), Holm-adjusted over the whole
  grid at once (``p_holm_grid``: every stream × chain × method × metric × step tested; the
  family size is in ``tests_in_family``), so a cell is not significant by the grid's many looks;
- equivalence (TOST, two one-sided paired t-tests) within ± ``margin`` × |step-0 mean| (default
  10 %), Holm-adjusted over the grid the same way (``p_equivalence_holm_grid``).

The figure has one panel per (metric, method) (rows: metric, columns: method), per stream a
file: the mean over runs of the run medians against the pruned fraction, one line per chain,
the random-order control dashed.

    python -m analysis.grid_stats --results RUN/results --out RUN/report/grid
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl
from scipy import stats

from explanations.grid import read_faithfulness
from analysis.paired import holm
from core.cli import HelpFormatter

GROUPS = ("stream", "chain", "method", "metric")
MARGIN = 0.10  # equivalence bounds: ± this fraction of the step-0 mean's magnitude


def grid_per_run(faith: pl.DataFrame) -> pl.DataFrame:
    """One row per (stream, chain, method, metric, run, step): the clips' medians."""
    return (faith.group_by(*GROUPS, "run", "step")
            .agg(pl.col("prune_ratio").mean(), pl.col("score").median(), pl.col("score_random").median(),
                 pl.col("score").is_not_null().sum().alias("clips"))
            .sort(*GROUPS, "step", "run"))


def _tost_p(diff: np.ndarray, bound: float) -> float | None:
    """p of the paired equivalence test: the larger of the two one-sided t-tests."""
    if len(diff) < 2 or not np.std(diff) > 0 or not bound > 0:
        return None
    lower = stats.ttest_1samp(diff, -bound, alternative="greater").pvalue
    upper = stats.ttest_1samp(diff, bound, alternative="less").pvalue
    return float(max(lower, upper))


def grid_paired(per_run: pl.DataFrame, margin: float = MARGIN) -> pl.DataFrame:
    """Every step > 0 against step 0 per (stream, chain, method, metric); see the module doc."""
    rows = []
    for key, part in per_run.group_by(*GROUPS, maintain_order=True):
        group = dict(zip(GROUPS, key))
        base = part.filter(pl.col("step") == 0).select("run", base="score").drop_nulls()
        if base.is_empty():
            continue
        bound = margin * abs(float(base["base"].mean()))
        for (step,), at in part.filter(pl.col("step") > 0).group_by("step", maintain_order=True):
            paired = at.join(base, on="run").drop_nulls("score")
            diff = (paired["score"] - paired["base"]).to_numpy()
            p_t = None
            if len(diff) >= 2 and np.std(diff) > 0:
                p_t = float(stats.ttest_1samp(diff, 0.0).pvalue)
            rows.append({**group, "step": step, "prune_ratio": float(at["prune_ratio"].mean()), "n": len(diff),
                         "mean_diff": float(diff.mean()) if len(diff) else None, "p_t": p_t,
                         "margin": bound, "p_equivalence": _tost_p(diff, bound)})
    schema = {**{g: pl.String for g in GROUPS}, "step": pl.Int64, "prune_ratio": pl.Float64, "n": pl.Int64,
              "mean_diff": pl.Float64, "p_t": pl.Float64, "margin": pl.Float64, "p_equivalence": pl.Float64}
    frame = pl.DataFrame(rows, schema=schema, orient="row")
    return frame.with_columns(
        pl.Series("p_holm_grid", holm(frame["p_t"].to_list()), dtype=pl.Float64),
        pl.Series("p_equivalence_holm_grid", holm(frame["p_equivalence"].to_list()), dtype=pl.Float64),
        pl.lit(frame["p_t"].is_not_null().sum(), dtype=pl.Int64).alias("tests_in_family"))


def grid_figure(per_run: pl.DataFrame, stream: str, path: Path) -> Path:
    """Rows: metric, columns: method; score against the pruned fraction per chain (see module doc)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    part = per_run.filter(pl.col("stream") == stream)
    if part.is_empty():
        raise ValueError(f"no faithfulness rows of stream {stream!r}")
    metrics, methods = part["metric"].unique(maintain_order=True), part["method"].unique(maintain_order=True)
    fig, axes = plt.subplots(len(metrics), len(methods), squeeze=False, sharex=True,
                             figsize=(3.2 * len(methods), 2.4 * len(metrics)))
    for r, metric in enumerate(metrics):
        for c, method in enumerate(methods):
            ax = axes[r][c]
            cell = part.filter((pl.col("metric") == metric) & (pl.col("method") == method))
            for (chain,), lines in cell.group_by("chain", maintain_order=True):
                means = lines.group_by("step").agg(pl.col("prune_ratio").mean(), pl.col("score").mean(),
                                                   pl.col("score_random").mean()).sort("step")
                drawn = ax.plot(means["prune_ratio"], means["score"], marker="o", ms=3, label=chain)[0]
                if means["score_random"].is_not_null().any():
                    ax.plot(means["prune_ratio"], means["score_random"], ls="--", color=drawn.get_color(), lw=0.8)
            if r == 0:
                ax.set_title(method, fontsize=9)
            if c == 0:
                ax.set_ylabel(metric, fontsize=9)
            if r == len(metrics) - 1:
                ax.set_xlabel("pruned fraction", fontsize=8)
    axes[0][0].legend(fontsize=7, title="dashed: random order", title_fontsize=6)
    fig.suptitle(f"{stream}: faithfulness (run medians, mean over runs) against pruning", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m analysis.grid_stats",
                                     description="faithfulness grid statistics and figure",
                                     epilog="exit codes: 0 tables and figures written; 2 bad command line",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--results", type=Path, required=True, help="the experiment's results store")
    parser.add_argument("--out", type=Path, required=True, help="folder for the CSV tables and figures")
    parser.add_argument("--margin", type=float, default=MARGIN, help="equivalence margin of the paired tests")
    args = parser.parse_args(argv)
    per_run = grid_per_run(read_faithfulness(args.results))
    args.out.mkdir(parents=True, exist_ok=True)
    per_run.write_csv(args.out / "faithfulness_per_run.csv")
    grid_paired(per_run, args.margin).write_csv(args.out / "faithfulness_paired.csv")
    for stream in per_run["stream"].unique().sort():
        print(grid_figure(per_run, stream, args.out / f"faithfulness_grid_{stream}.png"))


if __name__ == "__main__":
    main()
