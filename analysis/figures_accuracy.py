"""Figures of accuracy and cost under pruning, and the per-step statistics any metric shares
(mean ± sd, 95 % t-interval trends, effect-size and p bars); conventions: ``analysis.figure_canvas``.

The figures of accuracy and of IROF against the pruned fraction (``accuracy_per_run``,
``mean_sd``, ``trend_with_intervals``) draw every chain the table holds: the study's as lines,
each control as markers at the steps it was tested at (issue 27)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from analysis.figure_canvas import (ALPHA, EFFECT_GUIDES, FUSION_TABLE_RATIO, MIN_RUNS_FOR_INTERVAL, OKABE_ITO,
                            SINGLE_STREAMS, STUDY_CHAIN, Plotted, _facets, _panels, _save, add_chain_legend,
                            chain_marker, chain_rank_expr, control_chains, control_x, legend_outside,
                            percent_label, study_sorted, with_model, without_control_baselines)


def _colour(i: int) -> str:
    return f"C{i % len(OKABE_ITO)}"


def accuracy_per_run(accuracy: pl.DataFrame, metric: str, out: Path) -> Plotted:
    """One line per run of the metric against pruning ratio, a panel per single stream; each
    control chain's runs as markers at the steps they were tested at (shape: chain, colour: run)."""
    data = (without_control_baselines(accuracy.filter(pl.col("stream").is_in(SINGLE_STREAMS)))
            .select("stream", "chain", "run", "step", "prune_ratio", metric)
            .sort("stream", chain_rank_expr(), "run", "step"))
    streams = data["stream"].unique(maintain_order=True).to_list()
    runs, controls = sorted(data["run"].unique().to_list()), control_chains(data)
    fig, axes = _panels(max(len(streams), 1))
    for ax, ((stream,), part) in zip(axes[0], data.partition_by("stream", as_dict=True).items()):
        for (chain, run), line in part.partition_by("chain", "run", as_dict=True).items():
            x, colour = line["prune_ratio"] * 100, _colour(runs.index(run))
            if chain == STUDY_CHAIN:
                ax.plot(x, line[metric], marker="o", ms=3, color=colour, label=f"run {run}")
            else:
                ax.plot(control_x(x, chain, controls), line[metric], chain_marker(chain), ms=4, color=colour)
        ax.set(title=stream, xlabel="prunable channels removed (%)", ylabel=metric.replace("_", " ") + " (%)")
    add_chain_legend(axes[0, 0], controls)
    legend_outside(fig)
    return Plotted(_save(fig, out), data, fig)


def before_after_finetune(accuracy: pl.DataFrame, out: Path) -> Plotted:
    """Per single stream, video accuracy right after each prune, before fine-tuning (light
    protocol; step 0: the unpruned model measured the same way), beside the fine-tuned accuracy
    (full protocol): means over runs against the pruned fraction."""
    column = "video_accuracy_before_finetune"
    rows = accuracy.filter(pl.col("stream").is_in(SINGLE_STREAMS))
    if column not in rows.columns:
        rows = rows.with_columns(pl.lit(None, pl.Float64).alias(column))
    data = (rows.group_by("stream", "step").agg(pl.col("prune_ratio").first(), pl.len().alias("runs"),
                                                pl.col(column).mean().alias("before_finetune"),
                                                pl.col("video_accuracy").mean().alias("finetuned"))
            .sort("stream", "step"))
    streams = data["stream"].unique(maintain_order=True).to_list()
    fig, axes = _panels(max(len(streams), 1))
    for ax, ((stream,), part) in zip(axes[0], data.partition_by("stream", as_dict=True).items()):
        x = part["prune_ratio"] * 100
        ax.plot(x, part["finetuned"], marker="o", ms=3, label="fine-tuned (full protocol)")
        ax.plot(x, part["before_finetune"], marker="s", ms=3, ls="--",
                label="right after removal, before fine-tuning (light protocol)")
        ax.set(title=stream, xlabel="prunable channels removed (%)", ylabel="video accuracy (%), mean over runs")
    legend_outside(fig)
    return Plotted(_save(fig, out), data, fig)


def mean_sd(summary: pl.DataFrame, ylabel: str, out: Path) -> Plotted:
    """Mean ± sd against pruning ratio, a line per model (stream or fusion method); each control
    chain as markers ± sd at its steps, in its model's colour."""
    data = study_sorted(without_control_baselines(with_model(summary))
                        .select("model", "chain", "step", "prune_ratio", "n", "mean", "std"), chain_rank_expr(), "step")
    controls = control_chains(data)
    fig, axes = _panels(1, width=5.5)
    ax = axes[0, 0]
    for i, ((model,), rows) in enumerate(data.partition_by("model", as_dict=True, maintain_order=True).items()):
        for (chain,), part in rows.partition_by("chain", as_dict=True, maintain_order=True).items():
            study = chain == STUDY_CHAIN
            x = part["prune_ratio"] * 100
            ax.errorbar(x if study else control_x(x, chain, controls), part["mean"], yerr=part["std"].fill_null(0),
                        marker="o" if study else chain_marker(chain), ms=3 if study else 5, capsize=3,
                        ls="-" if study else "none", color=_colour(i), label=model if study else None)
    ax.set(xlabel="prunable channels removed (%)", ylabel=ylabel, title="mean ± sd over runs")
    add_chain_legend(ax, controls)
    legend_outside(fig, ax)
    return Plotted(_save(fig, out), data, fig)


def boxplots(values: pl.DataFrame, value: str, ylabel: str, out: Path) -> Plotted:
    """Box per pruning ratio of ``value``, a panel per model; data: model, step, values."""
    data = study_sorted(with_model(values).group_by("model", "step")
                        .agg(pl.col("prune_ratio").mean(), pl.col(value).alias("values")), "step")
    models = data["model"].unique(maintain_order=True).to_list()
    fig, axes = _facets(len(models))
    for ax, model in zip(axes, models):
        part = data.filter(pl.col("model") == model)
        ratios = (part["prune_ratio"] * 100).to_list()
        width = 0.6 * (min(np.diff(ratios)) if len(ratios) > 1 else 1.0)
        ax.boxplot(part["values"].to_list(), positions=ratios, widths=width, manage_ticks=False)
        ax.set(title=model, xlabel="prunable channels removed (%)", ylabel=ylabel)
    return Plotted(_save(fig, out), data, fig)


def _bars_per_model(effects: pl.DataFrame, column: str, ylabel: str, out: Path, guides, title) -> Plotted:
    """A facet per model, a bar per pruned step, tick labels the percent pruned to 0.1."""
    data = study_sorted(with_model(effects).select("model", "step", "prune_ratio", "n", column), "step")
    models = data["model"].unique(maintain_order=True).to_list()
    steps = sorted(data["step"].unique().to_list())
    ratios = data.group_by("step").agg(pl.col("prune_ratio").mean()).sort("step")["prune_ratio"]
    # each facet its own y scale: one model's large values never flatten another's bars
    fig, axes = _facets(len(models), width=max(4.0, 0.28 * len(steps) + 1.2), columns=2, sharey=False)
    for colour, (ax, model) in enumerate(zip(axes, models)):
        part = data.filter(pl.col("model") == model)
        x = [steps.index(s) for s in part["step"]]
        bars = ax.bar(x, part[column].fill_null(np.nan), width=0.7, color=f"C{colour}")
        for bar, n, value in zip(bars, part["n"], part[column]):
            if n < MIN_RUNS_FOR_INTERVAL:  # shown, hatched and labelled: not a finding
                bar.set_hatch("//")
                bar.set_alpha(0.5)
            if n < MIN_RUNS_FOR_INTERVAL or value is None:
                note = "n<3" if value is not None else ("no spread" if n >= 2 else "n<2")
                ax.annotate(note, (bar.get_x() + bar.get_width() / 2, 0), xytext=(0, 2),
                            textcoords="offset points", ha="center", va="bottom", rotation=90,
                            fontsize="xx-small", color="0.3")
        ax.set_xticks(range(len(steps)), [percent_label(r) for r in ratios],
                      rotation=90 if len(steps) > 6 else 0, fontsize="small")
        for y, style in guides:
            ax.axhline(y, color="grey", lw=0.8, ls=style)
        ax.set(title=model, xlabel="prunable channels removed (%)", ylabel=ylabel)
    fig.suptitle(title)
    return Plotted(_save(fig, out), data, fig)


def cohens_d_bars(effects: pl.DataFrame, out: Path) -> Plotted:
    guides = [(0, "-")] + [(s * g, ":") for g in EFFECT_GUIDES for s in (1, -1)]
    return _bars_per_model(effects, "cohens_d", "Cohen's d_z (pruned − unpruned)", out, guides,
                         "paired effect size; guides at ±0.2, ±0.5, ±0.8")


def wilcoxon_p_bars(effects: pl.DataFrame, out: Path) -> Plotted:
    return _bars_per_model(effects, "p_wilcoxon", "Wilcoxon p (two-sided)", out, [(ALPHA, "--")],
                         f"signed-rank test against step 0; line at p = {ALPHA}")


def trend_with_intervals(summary: pl.DataFrame, ylabel: str, out: Path) -> Plotted:
    """Mean with its 95 % t-interval against pruning ratio, a line and band per model; each control
    chain as markers with the interval as error bars at its steps, in its model's colour."""
    data = study_sorted(without_control_baselines(with_model(summary))
                        .select("model", "chain", "step", "prune_ratio", "n", "mean", "ci_low", "ci_high"),
                        chain_rank_expr(), "step")
    controls = control_chains(data)
    fig, axes = _panels(1, width=5.5)
    ax = axes[0, 0]
    # an interval from fewer than MIN_RUNS_FOR_INTERVAL runs is no finding: flagged, not drawn
    data = data.with_columns((pl.col("n") >= MIN_RUNS_FOR_INTERVAL).alias("interval_drawn"))
    for i, ((model,), rows) in enumerate(data.partition_by("model", as_dict=True, maintain_order=True).items()):
        for (chain,), part in rows.partition_by("chain", as_dict=True, maintain_order=True).items():
            x, colour = part["prune_ratio"] * 100, _colour(i)
            drawn = np.where(part["interval_drawn"].to_numpy(), 1.0, np.nan)
            low, high = (part[c].fill_null(np.nan).to_numpy() * drawn for c in ("ci_low", "ci_high"))
            if chain == STUDY_CHAIN:
                ax.plot(x, part["mean"], marker="o", ms=3, color=colour, label=model)
                ax.fill_between(x, low, high, alpha=0.25, color=colour)
                continue
            x, mean = control_x(x, chain, controls), part["mean"].fill_null(np.nan).to_numpy()
            ax.plot(x, mean, chain_marker(chain), ms=5, color=colour)
            ax.errorbar(x, mean, yerr=[mean - low, high - mean], fmt="none", capsize=3, color=colour)
    ax.set(xlabel="prunable channels removed (%)", ylabel=ylabel, title="mean and 95 % t-interval over runs")
    if not data["interval_drawn"].all():
        ax.annotate(f"no interval where n < {MIN_RUNS_FOR_INTERVAL} runs", (0.01, 0.01),
                    xycoords="axes fraction", fontsize="x-small", color="grey")
    add_chain_legend(ax, controls)
    legend_outside(fig, ax)
    return Plotted(_save(fig, out), data, fig)


def training_curves(epochs: pl.DataFrame, out: Path) -> Plotted:
    """Loss and accuracy per epoch of the unpruned training (step 0), a line per run and phase."""
    data = (epochs.filter(pl.col("step") == 0)
            .select("stream", "run", "phase", "epoch", "loss", "accuracy").sort("stream", "run", "phase", "epoch"))
    streams = data["stream"].unique(maintain_order=True).to_list()
    fig, axes = _panels(2, rows=max(len(streams), 1), sharey=False)
    for row, stream in zip(axes, streams):
        part = data.filter(pl.col("stream") == stream)
        for (run, phase), line in part.partition_by("run", "phase", as_dict=True).items():
            style = "-" if phase == "train" else "--"
            for ax, column in zip(row, ("loss", "accuracy")):
                ax.plot(line["epoch"], line[column], style, label=f"run {run} {phase}")
        for ax, column in zip(row, ("loss", "accuracy")):
            ax.set(title=f"{stream}: {column}", xlabel="epoch", ylabel=column)
    legend_outside(fig, axes[0, 1])
    return Plotted(_save(fig, out), data, fig)


SPEED_PANELS = (("latency_ms", "ms per clip (batch 1)", "latency"),
                ("throughput_cps", "clips per second", "throughput"))


def efficiency(accuracy: pl.DataFrame, out: Path) -> Plotted:
    """Measured parameter / FLOP / channel reduction, batch-1 latency and throughput against the
    target ratio (mean over runs), a line per single stream; the panel titles name the device
    and throughput batch where the rows say them."""
    columns = [c for c in ("throughput_cps", "device") if c not in accuracy.columns]
    accuracy = accuracy.with_columns(pl.lit(None, pl.Float64 if c != "device" else pl.String).alias(c)
                                     for c in columns)
    data = (accuracy.filter(pl.col("stream").is_in(SINGLE_STREAMS))
            .group_by("stream", "step").agg(pl.col("prune_ratio", "params_removed", "flops_removed",
                                                   "channels_removed", "latency_ms", "throughput_cps").mean(),
                                            pl.col("device").drop_nulls().unique().sort().str.join(", "))
            .sort("stream", "step"))
    fig, axes = _panels(3, width=4.0, sharey=False)
    axes = axes[0]
    for colour, ((stream,), part) in enumerate(data.partition_by("stream", as_dict=True, maintain_order=True).items()):
        x = part["prune_ratio"] * 100
        for column, style in (("params_removed", "-o"), ("flops_removed", "--s"), ("channels_removed", ":^")):
            axes[0].plot(x, part[column] * 100, style, color=f"C{colour}", ms=3,
                         label=f"{stream} {column.split('_')[0]}")
        for ax, (column, _, _) in zip(axes[1:], SPEED_PANELS):
            if part[column].null_count() < part.height:
                ax.plot(x, part[column], "-o", color=f"C{colour}", ms=3)
    axes[0].set(xlabel="prunable channels removed (%, target)", ylabel="removed (%)", title="params, FLOPs (of all); channels (of prunable)")
    devices = sorted({d for d in data["device"].to_list() if d})
    where = f" ({', '.join(devices)})" if devices else ""
    for ax, (column, ylabel, title) in zip(axes[1:], SPEED_PANELS):
        ax.set(xlabel="prunable channels removed (%, target)", ylabel=ylabel, title=title + where)
        if data[column].null_count() == data.height:
            ax.text(0.5, 0.5, f"{title} not measured", ha="center", va="center", transform=ax.transAxes)
    legend_outside(fig, axes[0])
    return Plotted(_save(fig, out), data, fig)


def _cell(mean: float, std: float | None, n: int) -> str:
    return f"{mean:.2f} (n={n})" if std is None else f"{mean:.2f} ± {std:.2f} (n={n})"


def fusion_table(summary: pl.DataFrame) -> pl.DataFrame:
    """Video accuracy, a row per pruning ratio ('pruned', percent to 0.1) and a column per model
    (streams, then fusion methods, in study order): 'mean ± sd (n=runs)'. Steps as rows keep
    the table as narrow as the models are few, at 18 steps too."""
    long = study_sorted(with_model(summary), "step")
    long = long.with_columns(
        pl.Series("cell", [_cell(*r) for r in long.select("mean", "std", "n").iter_rows()], dtype=pl.String),
        pl.format("{} %", pl.col("prune_ratio").mean().over("step").map_elements(
            percent_label, return_dtype=pl.String)).alias(FUSION_TABLE_RATIO))
    models = long["model"].unique(maintain_order=True).to_list()
    wide = long.pivot(on="model", index=["step", FUSION_TABLE_RATIO], values="cell").sort("step")
    return wide.select(FUSION_TABLE_RATIO, *models)
