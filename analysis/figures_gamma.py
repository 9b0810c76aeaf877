"""Network Slimming's |γ| distributions before and after (sparsity) training and at each
explained step, with each step's threshold; conventions: ``analysis.figure_canvas``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from analysis.figure_canvas import Plotted, _panels, _save


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
