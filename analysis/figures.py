"""Figures of an experiment, from the results tables, the statistics and the saved maps: one
name for every figure the report draws, each written by the module of its family.

- ``analysis.figure_canvas``: what every figure shares (canvas, Okabe–Ito palette, model and
  chain keys, the atomic PNG + PDF writer, ``Plotted``);
- ``analysis.figures_accuracy``: accuracy, cost, training curves, per-step statistics;
- ``analysis.figures_gamma``: Network Slimming's |γ| distributions;
- ``analysis.figures_explain``: saliency overlays, IROF per clip, saliency change.

Every function draws one PNG (and a PDF beside it) and returns the data it plotted
(``Plotted``), so tests and the report can compare a figure with the tables.
"""
from __future__ import annotations

from analysis.figure_canvas import (ALPHA, CHAIN_MARKERS, CONTROL_DODGE, DPI, EFFECT_GUIDES, FACET_COLUMNS,  # noqa: F401
                            FUSION_TABLE_RATIO, MAX_WIDTH_PX, MIN_RUNS_FOR_INTERVAL, OKABE_ITO, OUTLIER_IQR,
                            OVERLAY_COLUMNS, SINGLE_STREAMS, STUDY_CHAIN, STUDY_ORDER_KEY, VECTOR_FORMAT, Plotted,
                            _facets, _panels, _save, control_chains, legend_outside, model_rank, percent_label,
                            study_sorted, with_chain, with_model)
from analysis.figures_accuracy import (accuracy_per_run, before_after_finetune, boxplots, cohens_d_bars,  # noqa: F401
                               efficiency, fusion_table, mean_sd, training_curves, trend_with_intervals,
                               wilcoxon_p_bars)
from analysis.figures_explain import (CLIP_COLOURS, irof_by_correctness_boxes, normalised, overlay,  # noqa: F401
                              robust_limits, saliency_change_trend, saliency_files)
from analysis.figures_gamma import GAMMA_DISPLAY_BINS, GAMMA_PHASES, gamma_distribution  # noqa: F401
