"""The report's explanation sections: IROF (faithfulness) and the saliency maps under pruning.

Each section is a function of the ``analysis.report.ReportBuilder`` it appends to (``self``, as
a method would be), as ``analysis.grid_report``'s is."""
from __future__ import annotations

import polars as pl

from analysis import figures, stats
from analysis.report_text import irof_method
from core.results import read_table

def irof_section(self) -> None:
    self.heading("Faithfulness of the explanations (IROF)")
    if self.irof.is_empty():
        self.not_run("IROF", "the irof table is empty (the explain stage has not run)")
        return
    self.text(irof_method(self.meta.get("config", {}), self.irof))
    by_correctness = self.study_stats("irof_by_correctness")
    self.table("IROF per stream and step, for all clips and split by whether the model classified "
               "the clip correctly: runs, clips, mean ± sd over runs of each run's median over its "
               "clips (robust), and the mean of the per-run means (outlier-sensitive: one clip whose "
               "probability ratio explodes moves it) (tables/irof_by_correctness.csv)",
               stats.irof_robust_summary(by_correctness).drop("experiment"), name="irof_robust")
    self.figure("irof_boxplots", "IROF per explained clip at each ratio, correctly and incorrectly "
                "classified clips apart (higher = more faithful); axis limits robust to outliers, "
                "clips beyond them marked at the edge and counted",
                lambda p: figures.irof_by_correctness_boxes(self.irof, p))
    self.figure("irof_trend", "IROF per-run median over clips: mean and 95 % t-interval over runs" + self.controls_drawn,
                lambda p: figures.trend_with_intervals(self.stats["irof_summary"], "IROF (per-run median)", p))
    self.stat_tables("irof", "IROF (per-run median)")

def saliency_change_part(self) -> None:
    """Pruned against unpruned maps of the same clips (the saliency_change table)."""
    # pruned against unpruned, every chain (step-0 rows are the run-to-run reference)
    change = read_table(self.root / "results", "saliency_change").filter(pl.col("step") > 0)
    if change.is_empty():
        self.text("No saliency_change rows: no pruned step has been explained yet.")
        return
    rules = ", ".join(sorted(change["target_rule"].unique().to_list()))
    self.figure("saliency_change", "How much pruning changes the explanation: each pruned model's "
                "saliency map against the unpruned model's map of the same clip (same channel "
                f"reduction, target {rules}): Spearman rank correlation and IoU of the top "
                f"{change['top_fraction'][0] * 100:g} % pixels; per stream the mean over runs of each "
                "run's median over clips, ± sd over runs; 1 = unchanged" + self.controls_drawn,
                lambda p: figures.saliency_change_trend(change, p))
    self.table("Saliency change per stream, chain and step (the figure's numbers)",
               self.report.figures["saliency_change"].data, name="saliency_change_summary")

def saliency_section(self) -> None:
    self.heading("Saliency maps under pruning")
    saliency_change_part(self)
    saliency = self.root / "saliency"
    videos = self.figure_videos or figures.saliency_files(saliency)["video"].unique().sort().to_list()
    shown = [v for v in videos if not figures.saliency_files(saliency, v).is_empty()]
    for video in set(videos) - set(shown):
        self.text(f"No saved maps for {video}.")
    if not shown:
        self.not_run("saliency", f"no saliency maps under {saliency}")
        return
    for video in shown:
        self.figure(f"overlay_{video}", f"{video}: RGB frame, spatial and temporal saliency per ratio",
                    lambda p, v=video: figures.overlay(saliency, v, p))
