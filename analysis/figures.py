"""Figures of an experiment, from the results tables, the statistics and the saved maps.

Every function draws one PNG (matplotlib's Agg canvas, no pyplot state, ``DPI`` for print)
and returns the data it plotted, built before drawing and drawn from as is, so tests and
the report can compare a figure with the tables. Axes show the pruning ratio: the share of
the prunable channels removed, in percent (params and FLOPs removed are shares of the whole
model: ``analysis.pruned``).

Legible at the paper's size (17 steps x 5 runs x 5 models): models in study order (spatial,
temporal, then the fusions), one facet per model where a single panel would hold dozens of
boxes or bars (at most ``FACET_COLUMNS`` facets a row), legends outside the data, percent
tick labels to 0.1. ``Plotted.figure`` keeps the drawn matplotlib figure for checks.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import polars as pl
from cycler import cycler
from matplotlib.figure import Figure
from PIL import Image

from .results import atomic_file
from .summary import study_rank

DPI = 300
MAX_WIDTH_PX = 2400  # no PNG wider than this: the resolution drops for wide figures
SINGLE_STREAMS = ("spatial", "temporal")
FUSION_TABLE_RATIO = "prunable channels removed"  # the fusion table's first column
EFFECT_GUIDES = (0.2, 0.5, 0.8)  # Cohen's small / medium / large
ALPHA = 0.05
MIN_RUNS_FOR_INTERVAL = 3  # fewer runs: the interval is flagged, not drawn
OUTLIER_IQR = 3.0  # robust axis limits: quartiles ± this many interquartile ranges
OVERLAY_COLUMNS = ("RGB frame", "spatial saliency", "temporal saliency")
FACET_COLUMNS = 3  # facets per row
# Okabe & Ito's colour-blind-safe palette (black last): the colours C0, C1, ... of every figure.
# Set for the whole process: figures are drawn on Figure objects, which read rcParams when drawn.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
matplotlib.rcParams["axes.prop_cycle"] = cycler(color=list(OKABE_ITO))
VECTOR_FORMAT = "pdf"  # every figure is also saved as a PDF beside its PNG, for papers


@dataclass
class Plotted:
    """A written figure and the data drawn in it."""
    path: Path
    data: Any
    figure: Figure | None = None  # the drawn figure (legend and tick checks)


def with_model(df: pl.DataFrame) -> pl.DataFrame:
    """Add ``model``: 'spatial', 'temporal', 'fusion: <method>' (accuracy tables) or
    '<stream> (<saliency method>)' (IROF tables)."""
    if "fusion" in df.columns:
        label = (pl.when(pl.col("fusion").is_null()).then(pl.col("stream"))
                 .otherwise(pl.concat_str(pl.lit("fusion: "), pl.col("fusion"))))
    else:
        label = pl.format("{} ({})", "stream", "method")
    return df.with_columns(label.alias("model"))


# single streams before fusions (a sort key for frames with a ``model`` column); prefer
# ``study_sorted``, which also orders the fusion methods as the study does
STUDY_ORDER_KEY = pl.col("model").str.starts_with("fusion").alias("_fusion_last")


def model_rank(model: str) -> tuple:
    """Study order of a model label; an IROF label '<stream> (<method>)' ranks by its stream."""
    base, _, method = model.partition(" (")
    return (*study_rank(base), method)


def study_sorted(df: pl.DataFrame, *then: str) -> pl.DataFrame:
    """Rows by model in study order (spatial, temporal, fusions mean, svm_softmax, svm_features,
    svm_logits, then any other model alphabetically), then by ``then``."""
    order = sorted(df["model"].unique().to_list(), key=model_rank)
    rank = pl.col("model").replace_strict(order, list(range(len(order))), return_dtype=pl.Int64)
    return df.sort(rank, *then)


def percent_label(ratio: float) -> str:
    """A pruned fraction as a tick label: percent to 0.1 (what a 4 % step grid supports)."""
    return f"{ratio * 100:.1f}"


def legend_outside(fig: Figure, axes=None, **kwargs) -> None:
    """One legend right of the panels, never over the data (constrained layout makes room)."""
    source = axes if axes is not None else fig.axes[0]
    handles, labels = source.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize="small", **kwargs)


def _save(fig: Figure, path: Path) -> Path:
    """Write the PNG atomically (unique temporary name, then rename), at most MAX_WIDTH_PX wide:
    a figure that comes out wider is drawn again at a proportionally lower resolution. The same
    figure also goes to ``<name>.pdf`` (vector, for papers)."""
    with atomic_file(path.with_suffix(f".{VECTOR_FORMAT}")) as tmp:
        fig.savefig(tmp, format=VECTOR_FORMAT, bbox_inches="tight")
    dpi = DPI
    with atomic_file(path) as tmp:
        for _ in range(4):
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
            with Image.open(tmp) as image:
                width = image.width
            if width <= MAX_WIDTH_PX:
                break
            dpi = int(dpi * MAX_WIDTH_PX / width * 0.99)
        else:
            raise RuntimeError(f"{path}: still {width} px wide at {dpi} dpi")
    return path


def _panels(n: int, *, width=4.0, height=3.2, rows=1, sharey=True) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(width * n, height * rows), layout="constrained")
    return fig, np.atleast_2d(fig.subplots(rows, n, sharey=sharey, squeeze=False))


def _facets(n: int, *, width=4.0, height=3.0, sharey=True, columns=FACET_COLUMNS) -> tuple[Figure, list]:
    """``n`` panels, at most ``columns`` a row; unused cells of the last row are hidden."""
    columns = max(1, min(n, columns))
    rows = max(1, -(-n // columns))
    fig = Figure(figsize=(width * columns, height * rows), layout="constrained")
    axes = list(fig.subplots(rows, columns, sharey=sharey, squeeze=False).ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:max(n, 1)]


def accuracy_per_run(accuracy: pl.DataFrame, metric: str, out: Path) -> Plotted:
    """One line per run of the metric against pruning ratio, a panel per single stream."""
    data = (accuracy.filter(pl.col("stream").is_in(SINGLE_STREAMS))
            .select("stream", "run", "step", "prune_ratio", metric).sort("stream", "run", "step"))
    streams = data["stream"].unique(maintain_order=True).to_list()
    fig, axes = _panels(max(len(streams), 1))
    for ax, ((stream,), part) in zip(axes[0], data.partition_by("stream", as_dict=True).items()):
        for (run,), line in part.partition_by("run", as_dict=True).items():
            ax.plot(line["prune_ratio"] * 100, line[metric], marker="o", ms=3, label=f"run {run}")
        ax.set(title=stream, xlabel="prunable channels removed (%)", ylabel=metric.replace("_", " ") + " (%)")
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
    """Mean ± sd against pruning ratio, a line per model (stream or fusion method)."""
    data = study_sorted(with_model(summary).select("model", "step", "prune_ratio", "n", "mean", "std"), "step")
    fig, axes = _panels(1, width=5.5)
    ax = axes[0, 0]
    for (model,), part in data.partition_by("model", as_dict=True, maintain_order=True).items():
        ax.errorbar(part["prune_ratio"] * 100, part["mean"], yerr=part["std"].fill_null(0),
                    marker="o", ms=3, capsize=3, label=model)
    ax.set(xlabel="prunable channels removed (%)", ylabel=ylabel, title="mean ± sd over runs")
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
    """Mean with its 95 % t-interval against pruning ratio, a line per model."""
    data = study_sorted(with_model(summary).select("model", "step", "prune_ratio", "n", "mean", "ci_low",
                                                   "ci_high"), "step")
    fig, axes = _panels(1, width=5.5)
    ax = axes[0, 0]
    # an interval from fewer than MIN_RUNS_FOR_INTERVAL runs is no finding: flagged, not drawn
    data = data.with_columns((pl.col("n") >= MIN_RUNS_FOR_INTERVAL).alias("interval_drawn"))
    for (model,), part in data.partition_by("model", as_dict=True, maintain_order=True).items():
        x = part["prune_ratio"] * 100
        ax.plot(x, part["mean"], marker="o", ms=3, label=model)
        drawn = part["interval_drawn"].to_numpy()
        ax.fill_between(x, part["ci_low"].fill_null(np.nan).to_numpy() * np.where(drawn, 1, np.nan),
                        part["ci_high"].fill_null(np.nan).to_numpy() * np.where(drawn, 1, np.nan), alpha=0.25)
    ax.set(xlabel="prunable channels removed (%)", ylabel=ylabel, title="mean and 95 % t-interval over runs")
    if not data["interval_drawn"].all():
        ax.annotate(f"no interval where n < {MIN_RUNS_FOR_INTERVAL} runs", (0.01, 0.01),
                    xycoords="axes fraction", fontsize="x-small", color="grey")
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


GAMMA_PHASES = ("initial", "trained", "finetuned")  # the `gammas` table's phases, in training order


GAMMA_DISPLAY_BINS = 48  # at most this many bins over the |γ| range a stream's data covers


def _display_bins(part: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Display bins for one stream's stored |γ| bins (log-uniform, any resolution): runs of ``k``
    consecutive stored bins, ``k`` the smallest that puts the non-empty bins and the thresholds
    in at most GAMMA_DISPLAY_BINS bins (so a display bin never splits a stored one). Returns the
    display index of each row of ``part`` and the display edges."""
    factor = float((part["bin_high"] / part["bin_low"]).median())  # one stored bin's width ratio
    origin = float(part["bin_low"].min())

    def fine(value: np.ndarray) -> np.ndarray:  # stored-bin index of a value, counted from origin
        return np.floor(np.log(value / origin) / np.log(factor) + 1e-6).astype(np.int64)

    rows = fine(part["bin_low"].to_numpy())
    counted = rows[part["count"].to_numpy() > 0]
    thresholds = part["threshold"].drop_nulls().to_numpy()
    span = np.concatenate([counted, fine(thresholds)]) if thresholds.size else counted
    first, last = int(span.min()), int(span.max())
    k = max(1, -(-(last - first + 1) // GAMMA_DISPLAY_BINS))
    n = (last - first) // k + 1
    edges = origin * factor ** (first + k * np.arange(n + 1, dtype=np.float64))
    return np.clip((rows - first) // k, 0, n - 1), edges


def gamma_distribution(gammas: pl.DataFrame, steps: list[int], out: Path,
                       ratios: dict[int, float] | None = None) -> Plotted:
    """|γ| of each stream's prunable channels as a log-x histogram (Network Slimming's Figure 4):
    before training (``initial``), after (sparsity) training (``trained``, step 0) and after
    fine-tuning each pruned step in ``steps`` (``finetuned``), counts summed over runs and drawn as
    the share (%) of the model's prunable channels; each pruned step's |γ| threshold (mean over
    runs; the step removed the channels of the previous model scoring below it) is a dashed line
    in that step's colour. ``ratios`` (step → share of prunable channels) labels the steps. The
    table's fine bins are merged into at most GAMMA_DISPLAY_BINS bins over the range each
    stream's |γ| and thresholds cover (``_display_bins``), so a narrow distribution fills its panel.
    Data: stream, phase, step, label, bin, bin_low, bin_high, count, share, threshold."""
    ratios = ratios or {}
    order = {phase: i for i, phase in enumerate(GAMMA_PHASES)}
    shown = gammas.filter((pl.col("phase") != "finetuned") | pl.col("step").is_in(list(steps)))
    # the threshold of a curve is the mean over its runs (every bin row of a run repeats it)
    thresholds = (shown.group_by("stream", "phase", "step", "run").agg(pl.col("threshold").first())
                  .group_by("stream", "phase", "step").agg(pl.col("threshold").mean()))
    parts, display_edges = [], {}
    for (stream,), part in shown.partition_by("stream", as_dict=True, maintain_order=True).items():
        index, edges = _display_bins(part)
        display_edges[stream] = edges
        parts.append(part.select("stream", "phase", "step", "count").with_columns(
            pl.Series("bin", index, dtype=pl.Int64), pl.Series("bin_low", edges[index]),
            pl.Series("bin_high", edges[index + 1])))
    data = (pl.concat(parts)
            .group_by("stream", "phase", "step", "bin")
            .agg(pl.col("bin_low", "bin_high").first(), pl.col("count").sum())
            .join(thresholds, on=["stream", "phase", "step"], how="left")
            .with_columns((100 * pl.col("count") / pl.col("count").sum().over("stream", "phase", "step"))
                          .alias("share"),
                          pl.col("phase").replace_strict(order, default=len(order)).alias("_order"))
            .sort("stream", "_order", "step", "bin"))

    def label(phase: str, step: int, threshold: float | None) -> str:
        if phase == "initial":
            return "before training"
        if phase == "trained":
            return "trained (step 0)"
        pruned = f", {ratios[step] * 100:.1f} % of channels" if step in ratios else ""
        cut = f", threshold {threshold:.3g}" if threshold is not None else ""
        return f"step {step}{pruned}{cut}"

    data = data.with_columns(pl.struct("phase", "step", "threshold").map_elements(
        lambda r: label(r["phase"], r["step"], r["threshold"]), return_dtype=pl.String).alias("label")
    ).drop("_order")
    streams = data["stream"].unique(maintain_order=True).to_list()
    fig, axes = _panels(1, width=8.0, height=3.0, rows=max(len(streams), 1), sharey=False)  # room for the legend
    for ax, stream in zip(axes[:, 0], streams):
        edges = display_edges[stream]
        curves = data.filter(pl.col("stream") == stream)
        for colour, ((lab,), curve) in enumerate(curves.partition_by("label", as_dict=True,
                                                                     maintain_order=True).items()):
            share = np.zeros(len(edges) - 1)  # empty display bins drawn at 0
            share[curve["bin"].to_numpy()] = curve["share"].to_numpy()
            ax.stairs(share, edges, color=f"C{colour}", label=lab,
                      lw=1.6 if curve["phase"][0] != "finetuned" else 1.0)
            if curve["threshold"][0] is not None:
                ax.axvline(curve["threshold"][0], color=f"C{colour}", ls="--", lw=0.9)
        # log x as in Liu et al.'s Figure 4 when |γ| spans a decade or more; a narrower range
        # (little sparsity) reads better on a plain axis
        ax.set(xscale="log" if edges[-1] / edges[0] >= 10 else "linear", title=stream,
               xlabel="|γ| (channel score: mean |BatchNorm scale|)",
               ylabel="share of prunable channels (%)", xlim=(edges[0], edges[-1]))
        ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.02, 1.0))  # outside the data
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


def saliency_files(saliency_dir: Path, video: str) -> pl.DataFrame:
    """Saved maps of one video: stream, run, step, clip, path (smallest run and clip first)."""
    rows = []
    for path in Path(saliency_dir).glob(f"*/run*/step*/{video}__*.npz"):
        stream, run, step = path.parts[-4], path.parts[-3], path.parts[-2]
        rows.append({"stream": stream, "run": int(run.removeprefix("run")), "step": int(step.removeprefix("step")),
                     "clip": int(path.stem.rsplit("__", 1)[1]), "path": str(path)})
    schema = {"stream": pl.String, "run": pl.Int64, "step": pl.Int64, "clip": pl.Int64, "path": pl.String}
    return pl.DataFrame(rows, schema=schema).sort("run", "clip", "step", "stream")


def _load(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return dict(npz)


def normalised(saliency: np.ndarray) -> np.ndarray:
    """|map| / max |map|, so every panel shares the 0–1 colour scale."""
    magnitude = np.abs(saliency.astype(np.float32))
    peak = magnitude.max()
    return magnitude / peak if peak > 0 else magnitude


def overlay(saliency_dir: Path, video: str, out: Path, *, cmap="inferno", alpha=0.55) -> Plotted:
    """For one video: a row per pruning ratio, columns RGB frame · spatial · temporal overlay.

    Uses the lowest run and clip that has maps. Data: per row the step, ratio and the
    normalised maps drawn (None where a stream has no map).
    """
    files = saliency_files(saliency_dir, video)
    if files.is_empty():
        raise FileNotFoundError(f"{saliency_dir}: no saliency maps for video {video!r}")
    first = files.row(0, named=True)
    files = files.filter((pl.col("run") == first["run"]) & (pl.col("clip") == first["clip"]))
    rows = []
    for (step,), part in files.partition_by("step", as_dict=True, maintain_order=True).items():
        maps = {s: _load(p) for s, p in zip(part["stream"], part["path"])}
        background = maps["spatial"] if "spatial" in maps else next(iter(maps.values()))
        rows.append({"step": step, "prune_ratio": float(background["prune_ratio"]), "rgb": background["rgb"],
                     **{s: normalised(maps[s]["saliency"]) if s in maps else None for s in SINGLE_STREAMS}})
    fig = Figure(figsize=(7.5, 2.4 * len(rows) + 0.6), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(rows), 3, squeeze=False))
    image = None
    for i, (ax_row, row) in enumerate(zip(axes, rows)):
        for ax, title, key in zip(ax_row, OVERLAY_COLUMNS, ("rgb", *SINGLE_STREAMS)):
            ax.set_xticks([]), ax.set_yticks([])
            ax.imshow(row["rgb"])
            if key != "rgb":
                if row[key] is None:
                    ax.text(0.5, 0.5, "no map", ha="center", va="center", color="white", transform=ax.transAxes)
                else:
                    image = ax.imshow(row[key], cmap=cmap, vmin=0, vmax=1, alpha=alpha)
            if i == 0:  # column titles on the first row only
                ax.set_title(title)
        ax_row[0].set_ylabel(f"{row['prune_ratio'] * 100:.0f} % channels\nremoved")
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="saliency (normalised per map)")
    fig.suptitle(f"{video} (run {first['run']}, clip {first['clip']})")
    return Plotted(_save(fig, out), rows, fig)


def robust_limits(values: np.ndarray) -> tuple[float, float]:
    """Axis limits that one outlier cannot stretch: the data's range cut to the quartiles ±
    ``OUTLIER_IQR`` interquartile ranges, padded by 5 %."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    q1, q3 = np.percentile(values, [25, 75])
    spread = q3 - q1
    lo = max(values.min(), q1 - OUTLIER_IQR * spread)
    hi = min(values.max(), q3 + OUTLIER_IQR * spread)
    pad = 0.05 * (hi - lo) if hi > lo else max(abs(hi), 1.0) * 0.05
    return float(lo - pad), float(hi + pad)


CLIP_COLOURS = {"correct": "C0", "incorrect": "C3"}


def irof_by_correctness_boxes(irof: pl.DataFrame, out: Path) -> Plotted:
    """Per-clip IROF: a box per pruning ratio for correctly and for incorrectly classified clips,
    a panel per model, on robust axis limits; clips beyond them are drawn as triangles on the
    edge and counted in the panel. Data: ``boxes`` (model, step, prune_ratio, clips_of, values),
    ``limits`` and ``outside`` (clips beyond the limits) per model."""
    correct = pl.col("correct").fill_null(pl.col("predicted") == pl.col("label"))
    data = (with_model(irof).with_columns(pl.when(correct).then(pl.lit("correct")).otherwise(pl.lit("incorrect"))
                                          .alias("clips_of"))
            .group_by("model", "step", "clips_of").agg(pl.col("prune_ratio").mean(), pl.col("irof").alias("values"))
            .sort(STUDY_ORDER_KEY, "model", "step", "clips_of"))
    models = data["model"].unique(maintain_order=True).to_list()
    fig, axes = _panels(max(len(models), 1), width=4.5, sharey=False)
    limits, outside = {}, {}
    for ax, model in zip(axes[0], models):
        part = data.filter(pl.col("model") == model)
        values = np.concatenate([np.asarray(v, dtype=float) for v in part["values"].to_list()])
        lo, hi = limits[model] = robust_limits(values)
        ratios = np.unique(np.round((part["prune_ratio"] * 100).to_numpy(), 6))  # one per step
        width = 0.3 * (np.diff(ratios).min() if len(ratios) > 1 else 1.0)
        for subset, shift in (("correct", -0.55), ("incorrect", 0.55)):
            boxes = part.filter(pl.col("clips_of") == subset)
            if boxes.is_empty():
                continue
            positions = (boxes["prune_ratio"] * 100 + shift * width).to_list()
            ax.boxplot(boxes["values"].to_list(), positions=positions, widths=width, manage_ticks=False,
                       showfliers=False, patch_artist=True,
                       boxprops={"facecolor": CLIP_COLOURS[subset], "alpha": 0.5})
            for x, v in zip(positions, boxes["values"].to_list()):  # every clip, clipped to the axis
                v = np.asarray(v, dtype=float)
                inside = (v >= lo) & (v <= hi)
                ax.plot([x] * int(inside.sum()), v[inside], ".", ms=2, color=CLIP_COLOURS[subset])
                ax.plot([x] * int((v < lo).sum()), [lo] * int((v < lo).sum()), "v", ms=4, color="k")
                ax.plot([x] * int((v > hi).sum()), [hi] * int((v > hi).sum()), "^", ms=4, color="k")
            ax.plot([], [], "s", color=CLIP_COLOURS[subset], alpha=0.5, label=f"{subset}ly classified")
        outside[model] = int(((values < lo) | (values > hi)).sum())
        ax.set_ylim(lo, hi)
        note = (f"\n{outside[model]} clip(s) beyond the axis (▲▼ at its edge)"
                f"\nall clips: {values.min():.3g} to {values.max():.3g}") if outside[model] else ""
        ax.set(title=model, xlabel="prunable channels removed (%)" + note, ylabel="IROF per clip")
    if models:
        legend_outside(fig, axes[0][0])
    return Plotted(_save(fig, out), {"boxes": data, "limits": limits, "outside": outside}, fig)


def saliency_change_trend(change: pl.DataFrame, out: Path) -> Plotted:
    """Spearman ρ and top-10 % IoU of pruned against unpruned maps, against the pruned fraction:
    per stream the mean over runs of each run's median over clips, ± sd over runs (no bar below
    ``MIN_RUNS_FOR_INTERVAL`` runs); step 0 drawn at 1 (a map against itself)."""
    per_run = (with_model(change).group_by("model", "step", "run")
               .agg(pl.col("prune_ratio").mean(), pl.col("spearman").median(), pl.col("iou_top").median(),
                    pl.len().alias("clips")))
    data = (per_run.group_by("model", "step")
            .agg(pl.col("prune_ratio").mean(), pl.len().alias("runs"), pl.col("clips").sum(),
                 *[pl.col(c).mean().alias(f"{c}_mean") for c in ("spearman", "iou_top")],
                 *[pl.col(c).std().alias(f"{c}_sd") for c in ("spearman", "iou_top")])
            .sort(STUDY_ORDER_KEY, "model", "step"))
    fig, axes = _panels(2, width=4.5, sharey=False)
    for column, ax, title in (("spearman", axes[0, 0], "Spearman ρ"), ("iou_top", axes[0, 1], "top-10 % IoU")):
        for (model,), part in data.partition_by("model", as_dict=True, maintain_order=True).items():
            sd = np.where(part["runs"].to_numpy() >= MIN_RUNS_FOR_INTERVAL,
                          part[f"{column}_sd"].fill_null(np.nan).to_numpy(), np.nan)
            ax.errorbar([0.0, *(part["prune_ratio"] * 100)], [1.0, *part[f"{column}_mean"].fill_null(np.nan)],
                        yerr=[0.0, *sd], marker="o", ms=3, capsize=3, label=model)
        ax.set(xlabel="prunable channels removed (%)", ylabel=f"{title} vs unpruned", title=title)
        ax.set_ylim(top=1.05)
    legend_outside(fig, axes[0, 0])
    return Plotted(_save(fig, out), data, fig)
