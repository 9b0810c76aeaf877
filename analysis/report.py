"""The experiment report: ``report/index.html`` (figures embedded; rendering: analysis.render) and ``report/report.md``.

Built from the experiment folder alone: the results store (Parquet), the saved saliency
maps and ``experiment.json`` (config and code version, written by the sweep). Statistics
tables go to ``report/tables`` (Parquet, CSV, LaTeX), figures to ``report/figures`` (PNG, PDF). A part
whose stage has not run yet says so instead of failing.

``python -m analysis.report --experiment DIR [--metric video_accuracy]``
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
from tqdm import tqdm

from core.cli import HelpFormatter

from analysis import equivalence, figures, findings, grid_report, pruned, readable, report_explain, stats, summary
from analysis.protocol import protocol_text
from analysis.render import Block, _format, render_html, render_markdown
from analysis.report_text import (CONTROLS_DRAWN, CONTROLS_TEXT, ORIGINAL, ORIGINAL_TEXT, PAIRED_TEXT,
                                  findings_method, wilcoxon_floor, wilcoxon_note)  # noqa: F401 (wilcoxon_floor: the report's API)
from core.atomic import atomic_file
from core.results import DEFAULT_CHAIN as STUDY_CHAIN
from core.results import ResultsSchemaError, read_table


POSTHOC_ROWS_SHOWN = 40  # longer post-hoc tables show only the significant pairs
LONG_TABLE_ROWS = 40  # a longer table is collapsed behind <details> (its caption stays in view)



@dataclass
class Report:
    """What was written, with the data behind every figure and table (for checks)."""
    index: Path
    markdown: Path
    figures: dict[str, figures.Plotted] = field(default_factory=dict)
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    not_run: list[str] = field(default_factory=list)


def read_experiment_json(root: Path) -> dict:
    path = root / "experiment.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from exc


def in_study_order(table: pl.DataFrame) -> pl.DataFrame:
    """Rows by model in study order (spatial, temporal, fusions), then chain (study first), then step."""
    if table.is_empty():
        return table
    fusion = table["fusion"].to_list() if "fusion" in table.columns else [None] * table.height
    chains = table["chain"] if "chain" in table.columns else table["control"]  # vs_control: the control
    keys = [(summary.study_rank(summary.model_label(s, f)), findings.chain_rank(c), step)
            for s, f, c, step in zip(table["stream"], fusion, chains,
                                     table["step"] if "step" in table.columns else [0] * table.height)]
    order = sorted(range(table.height), key=keys.__getitem__)
    return table[order]


def study_chain(table: pl.DataFrame) -> pl.DataFrame:
    """The rows of the study's chain (``slimming``), without the controls' (``prune.chains``)."""
    return table.filter(pl.col("chain") == STUDY_CHAIN)


class ReportBuilder:
    """Collects blocks section by section; each section checks its own inputs."""

    def __init__(self, root: Path, metric: str, figure_videos: list[str] | None):
        self.root, self.metric = Path(root), metric
        self.out = self.root / "report"
        self.meta = read_experiment_json(self.root)
        if figure_videos is None:
            figure_videos = self.meta.get("config", {}).get("explain", {}).get("figure_videos")
        self.figure_videos = figure_videos
        results = self.root / "results"
        # the sections below describe the study's chain; the controls' rows (issue 27) reach the
        # statistics tables, which group by chain
        self.all_accuracy = read_table(results, "accuracy")  # every chain: the figures that draw the controls
        self.accuracy = study_chain(self.all_accuracy)
        self.controls_drawn = CONTROLS_DRAWN if figures.control_chains(self.all_accuracy) else ""
        self.epochs = study_chain(read_table(results, "epochs"))
        self.irof = study_chain(read_table(results, "irof"))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.settings = equivalence.Settings.from_config(self.meta.get("config"))
            self.stats = stats.compute_tables(results, metric, self.settings)
        self.warnings = list(dict.fromkeys(str(w.message) for w in caught))
        self.blocks: list[Block] = []
        self.report = Report(self.out / "index.html", self.out / "report.md", tables=dict(self.stats))

    # building blocks
    def heading(self, text: str) -> None:
        self.blocks.append(Block("heading", text))

    def text(self, text: str) -> None:
        self.blocks.append(Block("text", text))

    def not_run(self, part: str, why: str) -> None:
        self.report.not_run.append(part)
        self.text(f"Not available yet: {why}.")

    def figure(self, name: str, caption: str, draw: Callable[[Path], figures.Plotted]) -> None:
        plotted = draw(self.out / "figures" / f"{name}.png")
        self.report.figures[name] = plotted
        self.blocks.append(Block("figure", caption, path=plotted.path))

    def table(self, caption: str, table: pl.DataFrame, name: str | None = None, unit: str | None = None,
              collapsed: bool = False) -> None:
        """A table; longer than LONG_TABLE_ROWS or ``collapsed``: behind <details>, caption in view."""
        if name:
            self.report.tables.setdefault(name, table)
        unit = self.unit_of(name or caption) if unit is None else unit
        if collapsed or table.height > LONG_TABLE_ROWS:  # 17 steps x 5 models: keep the page readable
            self.text(caption)
            self.blocks.append(Block("details", f"show all {table.height} rows", table=table, unit=unit))
            return
        self.blocks.append(Block("table", caption, table=table, unit=unit))

    def study_stats(self, name: str) -> pl.DataFrame:
        """A statistics table's rows of the study's chain: the figures, like the sections, describe
        it (the tables show every chain, each in its own rows)."""
        return study_chain(self.stats[name])

    def unit_of(self, name: str) -> str:
        """The unit of a table's values: % for accuracy tables, none for IROF, loss, saliency."""
        plain = name.startswith(("irof", "IROF", "saliency", "Saliency")) or self.metric == "loss"
        return "" if plain else "%"

    def paired_tables(self, prefix: str, what: str) -> None:
        """The paired analysis (runs as the repeated measure), shown before the original study's."""
        self.text(PAIRED_TEXT)
        posthoc = self.stats[f"{prefix}_posthoc_paired"]
        smallest_n = int(posthoc["n"].min()) if posthoc.height and posthoc["n"].min() else None
        for kind, caption in (("anova_rm", f"{what}: repeated-measures ANOVA over steps, runs as subjects, "
                                           "Greenhouse-Geisser corrected p_gg"),
                              ("posthoc_paired", f"{what}: each step against step 0, runs paired, "
                                                 "paired t and exact Wilcoxon, Holm-adjusted"
                                                 + wilcoxon_note(smallest_n))):
            frame = self.stats[f"{prefix}_{kind}"].drop("experiment")
            self.table(f"{caption} (tables/{prefix}_{kind}.csv)", frame, unit=self.unit_of(prefix))
        few = self.stats[f"{prefix}_summary"].filter(pl.col("n") < figures.MIN_RUNS_FOR_INTERVAL)
        if few.height:
            self.text(f"{few.height} step(s) of {what} have fewer than {figures.MIN_RUNS_FOR_INTERVAL} runs: "
                      "their intervals and tests rest on too few runs to be findings (flagged in the "
                      "tables, no interval drawn).")

    def stat_tables(self, prefix: str, what: str,
                    original_figures: Callable[[], None] | None = None) -> None:
        """Paired analysis first; then, labelled, the original study's figures and tables."""
        self.paired_tables(prefix, what)
        self.text(ORIGINAL_TEXT)
        if original_figures:
            original_figures()
        for kind, caption in (("summary", f"{what}: per step, n runs, mean, sd, 95 % t-interval"),
                              ("effects", f"{what}: each step against step 0, runs paired, "
                                          "Cohen's d_z, Wilcoxon (scipy 'auto'), paired t"),
                              ("anova", f"{what}: one-way between-groups ANOVA across steps"),
                              ("posthoc", f"{what}: every pair of steps, Bonferroni-corrected")):
            frame = self.stats[f"{prefix}_{kind}"].drop("experiment")
            source = f"tables/{prefix}_{kind}.csv"
            caption = ORIGINAL + caption
            if kind == "summary" and (frame["n"] < figures.MIN_RUNS_FOR_INTERVAL).any():
                frame = frame.with_columns(pl.when(pl.col("n") < figures.MIN_RUNS_FOR_INTERVAL)
                                           .then(pl.lit(f"n < {figures.MIN_RUNS_FOR_INTERVAL}: not a finding"))
                                           .otherwise(pl.lit("")).alias("interval"))
            if kind == "posthoc" and frame.height > POSTHOC_ROWS_SHOWN:
                significant = frame.filter(pl.col("p_bonf") < figures.ALPHA)
                self.table(f"{caption}; {significant.height} of {frame.height} pairs with Bonferroni "
                           f"p < {figures.ALPHA} ({source})", significant, unit=self.unit_of(prefix), collapsed=True)
                self.blocks.append(Block("details", f"all {frame.height} pairs", table=frame,
                                         unit=self.unit_of(prefix)))
                continue
            # the original study's tables: kept for comparison, collapsed behind <details>
            self.table(f"{caption} ({source})", frame, unit=self.unit_of(prefix), collapsed=True)

    def main_result(self) -> tuple[pl.DataFrame, str]:
        """The summary table and the test of its p columns (also scripts/docs_tables.py's)."""
        return summary.main_result(self.accuracy, self.irof, self.metric,
                                   self.stats.get(f"{self.metric}_posthoc_paired"),
                                   self.stats.get("irof_posthoc_paired"))

    # sections
    def title(self) -> None:
        name = self.meta.get("config", {}).get("experiment", {}).get("name", self.root.name)
        self.heading(f"Experiment {name}")
        self.text(f"Report written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from {self.root}.")

    def findings_section(self) -> None:
        """The findings in words, per model and chain, generated from the tables below."""
        self.heading("Findings")
        if self.accuracy.is_empty():
            self.not_run("findings", "the accuracy table is empty (training has not run)")
            return
        results = self.root / "results"  # every chain (the sections below keep to the study's)
        table = findings.findings_table(self.stats, read_table(results, "accuracy"), self.metric, self.settings,
                                        read_table(results, "saliency_change"), read_table(results, "irof"))
        self.report.tables["findings"] = table
        if table.is_empty():
            self.text("No pruned step to compare with the unpruned models yet: no findings.")
            return
        self.blocks.append(Block("list", "\n".join(table["sentence"].to_list())))
        self.text(findings_method(self.settings))
        self.table("Findings per model and chain (tables/findings.csv)", findings.shown(table), unit="")

    def equivalence_section(self) -> None:
        """TOST per step and the fixed-sequence answer, for accuracy and IROF."""
        self.heading("Equivalence with the unpruned models")
        if f"{self.metric}_equivalence" not in self.stats:
            self.not_run("equivalence", "the accuracy table is empty (training has not run)")
            return
        for prefix, what in ((self.metric, self.metric.replace("_", " ")), ("irof", "IROF ÷ segments")):
            if f"{prefix}_kept" not in self.stats:
                continue
            unit = self.unit_of(prefix)
            self.table(f"{what}: up to which step each model and chain stays within the margin "
                       f"(fixed-sequence TOST along increasing ratio) (tables/{prefix}_kept.csv)",
                       in_study_order(self.stats[f"{prefix}_kept"]).drop("experiment"), unit=unit)
            self.table(f"{what}: each step against step 0, runs paired: Δ with its 95 % and 90 % "
                       "t-intervals, TOST p against ±margin (equivalent when the 90 % interval lies inside), "
                       f"minimal detectable effect (tables/{prefix}_equivalence.csv)",
                       in_study_order(self.stats[f"{prefix}_equivalence"]).drop("experiment"), unit=unit)

    def controls_section(self) -> None:
        """The study's chain against each control at the steps both have, runs paired."""
        present = [p for p in (self.metric, "irof") if f"{p}_vs_control" in self.stats]
        if not present:  # no control chain ran (prune.chains): nothing to set beside the study
            return
        self.heading("Against the controls")
        self.text(CONTROLS_TEXT)
        for prefix, what in ((self.metric, self.metric.replace("_", " ")), ("irof", "IROF ÷ segments")):
            if prefix in present:
                self.table(f"{what}: {STUDY_CHAIN} − control per model and shared step, runs paired: Δ with "
                           f"its 95 % t-interval, paired t, Holm-adjusted over the steps "
                           f"(tables/{prefix}_vs_control.csv)",
                           in_study_order(self.stats[f"{prefix}_vs_control"]).drop("experiment"),
                           unit=self.unit_of(prefix))

    def summary_section(self) -> None:
        """The main result first: per model and explained step, accuracy and IROF vs step 0."""
        self.heading("Summary")
        if self.accuracy.is_empty():
            self.not_run("summary", "the accuracy table is empty (training has not run)")
            return
        table, test = self.main_result()
        self.table(f"Per model, chain and explained step: mean ± sd over runs; Δ against step 0 (runs "
                   f"paired) with its 95 % t-interval [low, high]; p against step 0 by {test}. "
                   f"Removed (%): {pruned.DEFINITIONS}", table, name="summary")
        short = table.filter(pl.col(stats.FEWER_RUNS))
        if short.height:  # never a silent mean over fewer runs than the other cells
            self.text(f"{short.height} row(s) of this table average over fewer runs than the others "
                      f"(fewer_runs; runs {sorted(set(short['runs'].to_list()))} of {table['runs'].max()}): "
                      "some runs' results are missing; rerun the sweep to complete them.")

    def overview(self) -> None:
        self.heading("Run information")
        if not self.meta:
            self.text(f"{self.root / 'experiment.json'} not found: config and code version unknown.")
        else:
            facts = {k: v for k, v in self.meta.items() if k not in ("config", "versions", "device")}
            self.table("Run information (experiment.json)",
                       pl.DataFrame({"field": list(facts), "value": [_format(v) for v in facts.values()]}))
            provenance = {k: self.meta[k] for k in ("versions", "device") if k in self.meta}  # collapsed
            self.blocks.append(Block("code", json.dumps({**provenance, "config": self.meta.get("config", {})}
                                                        if provenance else self.meta.get("config", {}), indent=2)))

    def accuracy_section(self) -> None:
        label = self.metric.replace("_", " ")
        self.heading(f"Accuracy under pruning ({label})")
        if self.meta.get("config"):
            self.text(protocol_text(self.meta["config"]))
        singles = self.accuracy.filter(pl.col("stream").is_in(figures.SINGLE_STREAMS))
        if singles.is_empty():
            self.not_run("accuracy", "no spatial or temporal rows in the accuracy table (training has not run)")
            return
        if singles["step"].max() == 0:
            self.text("Only unpruned models (step 0) so far: the pruning stage has not run yet.")
        self.table(f"What each step removed, mean over runs (%): {pruned.DEFINITIONS}. Figures below "
                   "plot against the channels (the pruning ratio)", pruned.fractions_table(self.accuracy),
                   name="pruned_fractions")
        self.figure("accuracy_per_run", f"{label} against the pruned fraction, one line per run" + self.controls_drawn,
                    lambda p: figures.accuracy_per_run(self.all_accuracy, self.metric, p))
        self.figure("accuracy_mean_sd", f"{label}: mean ± sd over runs" + self.controls_drawn,
                    lambda p: figures.mean_sd(self.stats[f"{self.metric}_summary"], f"{label} (%)", p))
        self.figure("accuracy_boxplots", f"{label}: distribution over runs at each ratio",
                    lambda p: figures.boxplots(self.accuracy, self.metric, f"{label} (%)", p))
        effects = self.study_stats(f"{self.metric}_effects")

        def original_figures() -> None:
            if effects.is_empty():
                self.text("No pruned step to compare with step 0 yet: no effect sizes or tests.")
                return
            self.figure("accuracy_cohens_d", ORIGINAL + "paired Cohen's d_z of each step against step 0",
                        lambda p: figures.cohens_d_bars(effects, p))
            n = int(effects["n"].min()) if effects["n"].min() else None
            self.figure("accuracy_wilcoxon_p", ORIGINAL + "Wilcoxon signed-rank p of each step against step 0"
                        + wilcoxon_note(n), lambda p: figures.wilcoxon_p_bars(effects, p))

        self.stat_tables(self.metric, label, original_figures)

    def fusion_section(self) -> None:
        self.heading("Fusion of the two streams")
        if self.accuracy.filter(pl.col("stream") == "fusion").is_empty():
            self.not_run("fusion", "no fusion rows in the accuracy table (the fuse stage has not run)")
            return
        summary = stats.summary(self.accuracy, stats.ACCURACY_GROUPS, "video_accuracy")
        self.table("Video accuracy (%) per stream and fusion method: mean ± sd (n runs) by share of prunable "
                   "channels removed (parameters and FLOPs removed: table pruned_fractions)",
                   figures.fusion_table(summary), name="fusion_table")

    def efficiency_section(self) -> None:
        self.heading("Parameters, FLOPs and latency")
        singles = self.accuracy.filter(pl.col("stream").is_in(figures.SINGLE_STREAMS))
        if singles.is_empty():
            self.not_run("efficiency", "no accuracy rows yet")
            return
        self.figure("efficiency", "measured fraction of parameters, FLOPs and channels removed; batch-1 "
                    "latency and throughput (mean over runs)",
                    lambda p: figures.efficiency(self.accuracy, p))
        if singles["latency_ms"].null_count() == singles.height:
            self.text("Latency was not measured (the accuracy table's latency_ms column is empty).")

    def training_section(self) -> None:
        self.heading("Training curves")
        if self.epochs.filter(pl.col("step") == 0).is_empty():
            self.not_run("training curves", "the epochs table has no step-0 rows (training has not run)")
            return
        self.figure("training_curves", "loss and accuracy per epoch of the unpruned models",
                    lambda p: figures.training_curves(self.epochs, p))

    def slimming_section(self) -> None:
        """Network Slimming at work: |γ| before and after (sparsity) training and at each explained
        step, with the threshold each pruning step cut at."""
        self.heading("Network Slimming: BatchNorm scales and pruning thresholds")
        gammas = study_chain(read_table(self.root / "results", "gammas"))
        if gammas.is_empty():
            self.not_run("slimming", "the gammas table is empty (training has not run)")
            return
        train, prune = (self.meta.get("config", {}).get(k, {}) for k in ("train", "prune"))
        if "sparsity" in train:
            which = ("all prunable BatchNorms, residual groups together" if prune.get("residual")
                     else "internal block channels only")
            own = {s: (train.get(s) or {}).get("sparsity") for s in ("spatial", "temporal")}
            per_stream = "".join(f", {s} {v:g}" for s, v in own.items() if v is not None)
            self.text(f"Sparsity training (λ·Σ|γ|, Liu et al. 2017): λ = {train['sparsity']:g}{per_stream} while "
                      f"training the baseline, λ = {prune.get('sparsity', 0):g} while fine-tuning; penalised and "
                      f"pruned: {which}.")
        steps = [s for s in summary.explained_steps(self.accuracy, self.irof) if s > 0]
        self.figure("gamma_distribution", "|γ| of the prunable channels per stream (log scale, all runs): "
                    "before training, after (sparsity) training and after fine-tuning each explained step; "
                    "dashed: the |γ| threshold that step pruned at",
                    lambda p: figures.gamma_distribution(gammas, steps, p, pruned.step_ratios(self.accuracy)))
        if "video_accuracy_before_finetune" in self.accuracy.columns and \
                self.accuracy["video_accuracy_before_finetune"].drop_nulls().len():
            self.figure("accuracy_before_finetune", "Video accuracy right after each prune, before fine-tuning "
                        "(Liu et al.'s evidence that sparsity training worked; eval.light_clips clips, one crop), "
                        "beside the fine-tuned accuracy",
                        lambda p: figures.before_after_finetune(self.accuracy, p))
        thresholds = pruned.threshold_table(self.accuracy)
        if thresholds.is_empty():
            self.text("No pruned step yet: no thresholds.")
        else:
            self.table("|γ| threshold of each pruning step (channels scoring below it were removed), "
                       "mean / min / max over runs", thresholds, name="thresholds")

    def notes_section(self) -> None:
        if self.warnings:
            self.heading("Notes from the statistics")
            self.text("\n".join(f"- {w}" for w in self.warnings))

    def sections(self) -> list[Callable[[], None]]:
        """The report in order; a new part of the report is one more entry here."""
        return [self.title, self.findings_section, self.summary_section, self.equivalence_section,
                self.controls_section,
                self.accuracy_section, self.fusion_section,
                self.efficiency_section, self.slimming_section, self.training_section,
                lambda: report_explain.irof_section(self),
                lambda: grid_report.grid_section(self),  # issue 30: only when more than the study's pair
                lambda: report_explain.saliency_section(self), self.notes_section, self.overview]

    def build(self) -> Report:
        for section in tqdm(self.sections(), desc="report", unit="section"):
            section()
        tables = self.out / "tables"
        stats.write_tables(self.report.tables, tables)
        for name, table in self.report.tables.items():  # LaTeX (booktabs) beside each CSV, for papers
            readable.write_latex(table, tables / f"{name}.tex", self.unit_of(name))
        with atomic_file(self.report.index) as tmp:
            tmp.write_text(render_html(self.blocks, self.out))
        with atomic_file(self.report.markdown) as tmp:
            tmp.write_text(render_markdown(self.blocks, self.out))
        return self.report


def build_report(root: Path, *, metric: str = "video_accuracy",
                 figure_videos: list[str] | None = None) -> Report:
    """Write the report of the experiment under ``root``; ``figure_videos`` defaults to the
    config's ``explain.figure_videos``, else every video with saved maps."""
    if not Path(root).is_dir():
        raise FileNotFoundError(f"{root}: no such experiment folder")
    return ReportBuilder(root, metric, figure_videos).build()


def run_report_stage(cfg, ctx) -> Report:
    """Sweep stage: the report of the configured experiment root."""
    return build_report(cfg.paths.root, figure_videos=cfg.explain.figure_videos or None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="crossroads-report", description=__doc__.split("\n\n")[0],
                                     epilog="exit codes: 0 report written; 1 a results file cannot be read "
                                            "(named; rerun the sweep: it sets the file aside and rebuilds it); "
                                            "2 bad command line or no such folder",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--experiment", type=Path, required=True, help="experiment root, e.g. runs/demo")
    parser.add_argument("--metric", default="video_accuracy", choices=stats.METRICS,
                        help="accuracy column the figures and tables are about")
    args = parser.parse_args(argv)
    if not args.experiment.is_dir():
        parser.error(f"{args.experiment}: no such experiment folder")
    try:
        report = build_report(args.experiment, metric=args.metric)
    except ResultsSchemaError as exc:  # a damaged or foreign file: named, with what to do
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    print(report.index)
    print(report.markdown)
    for part in report.not_run:
        print(f"not run yet: {part}")


if __name__ == "__main__":
    main()
