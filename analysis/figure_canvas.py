"""What every figure of an experiment shares: the canvas, the palette, the model and chain
keys, and the atomic PNG + PDF writer (the figures themselves: ``analysis.figures``).

Every figure is drawn on matplotlib's Agg canvas (no pyplot state) at ``DPI`` for print and
returns the data it plotted, built before drawing and drawn from as is, so tests and the report
can compare a figure with the tables. Axes show the pruning ratio: the share of the prunable
channels removed, in percent (params and FLOPs removed are shares of the whole model:
``analysis.pruned``).

Legible at the paper's size (17 steps x 5 runs x 5 models): models in study order (spatial,
temporal, then the fusions), one facet per model where a single panel would hold dozens of
boxes or bars (at most ``FACET_COLUMNS`` facets a row), legends outside the data, percent
tick labels to 0.1. ``Plotted.figure`` keeps the drawn matplotlib figure for checks.

Chains (issue 27): the study's chain (``slimming``) is drawn as lines; its controls
(``prune.chains``), tested only at the explained steps and the last one, as markers at those
steps, one marker shape per chain (``CHAIN_MARKERS``), so colour keeps naming the model or run.
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

from core.atomic import atomic_file
from core.results import DEFAULT_CHAIN as STUDY_CHAIN
from analysis.summary import CHAINS, study_rank

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
    """One legend right of the panels, never over the data (constrained layout makes room); the
    chains' entries (``add_chain_legend``) last."""
    source = axes if axes is not None else fig.axes[0]
    handles, labels = source.get_legend_handles_labels()
    order = sorted(range(len(handles)), key=lambda i: getattr(handles[i], "get_gid", lambda: None)() == CHAIN_LEGEND_GID)
    if handles:
        fig.legend([handles[i] for i in order], [labels[i] for i in order], loc="outside right upper",
                   fontsize="small", **kwargs)


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




# the controls' marker shapes: told apart without colour (colour names the model or the run)
CHAIN_MARKERS = {"finetune_only": "s", "random": "^"}
CHAIN_LEGEND_GID = "chain-legend"  # the chains' legend entries, put after the models' or runs'
CONTROL_DODGE = 0.8  # percentage points: a control's marker beside the study's point at its step's ratio


def with_chain(df: pl.DataFrame) -> pl.DataFrame:
    """``chain`` filled: rows written before chains existed are the study's."""
    if "chain" not in df.columns:
        return df.with_columns(pl.lit(STUDY_CHAIN).alias("chain"))
    return df.with_columns(pl.col("chain").fill_null(STUDY_CHAIN))


def chain_rank_expr() -> pl.Expr:
    """A sort key: the study's chain first, then its controls in ``summary.CHAINS`` order."""
    return pl.col("chain").replace_strict(list(CHAINS), list(range(len(CHAINS))), default=len(CHAINS),
                                          return_dtype=pl.Int64)


def without_control_baselines(df: pl.DataFrame) -> pl.DataFrame:
    """Drop the controls' step-0 rows: step 0 is the one unpruned model every chain starts from,
    drawn once, by the study's line."""
    return with_chain(df).filter((pl.col("chain") == STUDY_CHAIN) | (pl.col("step") > 0))


def control_chains(df: pl.DataFrame) -> list[str]:
    """The control chains present in ``df``, in ``summary.CHAINS`` order."""
    present = set(with_chain(df)["chain"].unique().to_list()) - {STUDY_CHAIN}
    return sorted(present, key=lambda c: (CHAINS.index(c) if c in CHAINS else len(CHAINS), c))


def control_x(ratio_percent, chain: str, controls: list[str]) -> np.ndarray:
    """A control's x: its step's ratio, moved aside (first control left, second right, ...) by
    ``CONTROL_DODGE`` so no marker hides the study's point or another chain's (the data keeps
    the true ratio)."""
    i = controls.index(chain)
    offset = (-1 if i % 2 == 0 else 1) * (i // 2 + 1) * CONTROL_DODGE
    return np.asarray(ratio_percent, dtype=float) + offset


def chain_marker(chain: str) -> str:
    return CHAIN_MARKERS.get(chain, "P")


def add_chain_legend(ax, controls: list[str]) -> None:
    """Proxy entries that name each chain by its mark (black: colour names the model or run)."""
    if not controls:
        return
    ax.plot([], [], "-", color="k", label=f"{STUDY_CHAIN} (study)", gid=CHAIN_LEGEND_GID)
    for chain in controls:
        ax.plot([], [], chain_marker(chain), color="k", ls="none", gid=CHAIN_LEGEND_GID,
                label=f"{chain} (control)")
