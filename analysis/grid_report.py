"""The report's explanation-grid section (issue 30): shown when the experiment scored more
than the study's pair (vanilla gradient, IROF); the IROF section covers the pair alone.

Per stream a grid figure (``analysis.grid_stats.grid_figure``), one sentence per (stream, chain,
method, metric) at the most pruned step, and the paired table behind a fold; p-values are
Holm-adjusted over the whole grid (``analysis.grid_stats``)."""
from __future__ import annotations

import polars as pl

from analysis import figures
from explanations.grid import read_faithfulness
from analysis.grid_stats import MARGIN, grid_figure, grid_paired, grid_per_run
from explanations.metrics import HIGHER_IS_BETTER

ALPHA = 0.05


def finding(row: dict) -> str:
    """One sentence: the change at the most pruned step, its test and equivalence result."""
    better = HIGHER_IS_BETTER.get(row["metric"])
    direction = "" if row["mean_diff"] is None or better is None or row["mean_diff"] == 0 else \
        (" (more faithful)" if (row["mean_diff"] > 0) == better else " (less faithful)")
    changed = row["p_holm_grid"] is not None and row["p_holm_grid"] < ALPHA
    same = row["p_equivalence_holm_grid"] is not None and row["p_equivalence_holm_grid"] < ALPHA
    verdict = "changed" if changed else ("equivalent within the margin" if same else "inconclusive")
    diff = "n/a" if row["mean_diff"] is None else f"{row['mean_diff']:+.3g}"
    p = "n/a" if row["p_holm_grid"] is None else f"{row['p_holm_grid']:.3g}"
    return (f"- {row['stream']}, {row['chain']}: {row['method']} × {row['metric']} at "
            f"{100 * row['prune_ratio']:.1f} % pruned: {diff}{direction} over {row['n']} runs, "
            f"Holm p (grid) {p}: {verdict}.")


def grid_section(builder) -> None:
    """Append the section to a ``analysis.report.ReportBuilder``; nothing for the pair alone."""
    faith = read_faithfulness(builder.root / "results")
    if faith.select("method", "metric").unique().height <= 1:
        return
    builder.heading("Explanation grid: methods × faithfulness metrics")
    per_run = grid_per_run(faith)
    paired = grid_paired(per_run)
    family = int(paired["tests_in_family"].max() or 0) if paired.height else 0
    builder.text(f"Each (stream, chain, method, metric): every run's median over its clips; each pruned step "
                 f"against step 0 by a paired t-test and an equivalence test (TOST, ± {100 * MARGIN:.0f} % of "
                 f"the step-0 mean), Holm-adjusted over all {family} tests of the grid at once. "
                 "Methods, metrics and the random-order control: docs/explanations.md.")
    for stream in sorted(per_run["stream"].unique().to_list()):
        data = per_run.filter(pl.col("stream") == stream)
        builder.figure(f"faithfulness_grid_{stream}",
                       f"{stream}: rows metric, columns method; mean over runs of the run medians against the "
                       "pruned fraction, one line per chain, random-order control dashed",
                       lambda p, s=stream, d=data: figures.Plotted(grid_figure(per_run, s, p), d))
    if paired.height:
        last = paired.sort("step").group_by("stream", "chain", "method", "metric", maintain_order=True).last()
        builder.text("\n".join(finding(r) for r in last.sort("stream", "chain", "method", "metric").iter_rows(named=True)))
        builder.table("Every pruned step against step 0 per (stream, chain, method, metric)", paired, collapsed=True)
