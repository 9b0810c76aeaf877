"""Figures of the explanations: saliency overlays, IROF per clip, saliency change under
pruning (every chain: the study's as lines, controls as markers); conventions:
``analysis.figure_canvas``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from shards.format import parse_key

from analysis.figure_canvas import (MIN_RUNS_FOR_INTERVAL, OUTLIER_IQR, OVERLAY_COLUMNS, SINGLE_STREAMS, STUDY_CHAIN,
                            STUDY_ORDER_KEY, Plotted, _panels, _save, add_chain_legend, chain_marker,
                            chain_rank_expr, control_chains, control_x, legend_outside, with_chain, with_model)
from core.results import parse_model_partition


def saliency_files(saliency_dir: Path, video: str | None = None) -> pl.DataFrame:
    """Saved maps in the study's chain, of one video or (None) of all: video, stream, run, step,
    clip, path (smallest run and clip first). Their folders are results partitions
    (``core.results.parse_model_partition``), their names ``<video>__<clip>`` (``shards.format``)."""
    rows = []
    for path in Path(saliency_dir).rglob(f"{video or '*'}__*.npz"):
        where = parse_model_partition(path.parent.relative_to(saliency_dir).as_posix())
        if where.pop("chain") == STUDY_CHAIN:  # the overlay shows the study's models
            name, clip = parse_key(path.stem)
            rows.append({"video": name, **where, "clip": clip, "path": str(path)})
    schema = {"video": pl.String, "stream": pl.String, "run": pl.Int64, "step": pl.Int64, "clip": pl.Int64,
              "path": pl.String}
    return pl.DataFrame(rows, schema=schema).sort("video", "run", "clip", "step", "stream")


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
    ``MIN_RUNS_FOR_INTERVAL`` runs); step 0 drawn at 1 (a map against itself). The study's chain
    as lines, each control chain as markers at the steps it was explained at (issue 27)."""
    per_run = (with_model(with_chain(change)).group_by("model", "chain", "step", "run")
               .agg(pl.col("prune_ratio").mean(), pl.col("spearman").median(), pl.col("iou_top").median(),
                    pl.len().alias("clips")))
    data = (per_run.group_by("model", "chain", "step")
            .agg(pl.col("prune_ratio").mean(), pl.len().alias("runs"), pl.col("clips").sum(),
                 *[pl.col(c).mean().alias(f"{c}_mean") for c in ("spearman", "iou_top")],
                 *[pl.col(c).std().alias(f"{c}_sd") for c in ("spearman", "iou_top")])
            .sort(STUDY_ORDER_KEY, "model", chain_rank_expr(), "step"))
    controls = control_chains(data)
    fig, axes = _panels(2, width=4.5, sharey=False)
    for column, ax, title in (("spearman", axes[0, 0], "Spearman ρ"), ("iou_top", axes[0, 1], "top-10 % IoU")):
        for i, ((model,), rows) in enumerate(data.partition_by("model", as_dict=True, maintain_order=True).items()):
            for (chain,), part in rows.partition_by("chain", as_dict=True, maintain_order=True).items():
                sd = np.where(part["runs"].to_numpy() >= MIN_RUNS_FOR_INTERVAL,
                              part[f"{column}_sd"].fill_null(np.nan).to_numpy(), np.nan)
                x, mean = part["prune_ratio"] * 100, part[f"{column}_mean"].fill_null(np.nan).to_numpy()
                if chain == STUDY_CHAIN:
                    ax.errorbar([0.0, *x], [1.0, *mean], yerr=[0.0, *sd], marker="o", ms=3, capsize=3,
                                color=f"C{i}", label=model)
                else:
                    ax.errorbar(control_x(x, chain, controls), mean, yerr=sd, fmt=chain_marker(chain), ms=5,
                                capsize=3, color=f"C{i}")
        ax.set(xlabel="prunable channels removed (%)", ylabel=f"{title} vs unpruned", title=title)
        ax.set_ylim(top=1.05)
    add_chain_legend(axes[0, 0], controls)
    legend_outside(fig, axes[0, 0])
    return Plotted(_save(fig, out), data, fig)
