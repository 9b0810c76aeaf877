"""How much pruning changes an explanation: a pruned model's saliency map against the unpruned
model's map of the same clip, both reduced over channels the same way (``explain.reduce``).

- ``spearman``: Spearman rank correlation of the two maps' pixels (ties get average ranks, as
  scipy's ``spearmanr``); 1 = same order of importance, 0 = unrelated, −1 = reversed.
- ``iou_top``: intersection over union of the two maps' top ``TOP_FRACTION`` (10 %) pixels,
  ``ceil(0.1 · pixels)`` pixels each, ties broken by pixel index; 1 = the same most salient
  pixels, 0 = none shared.

A constant map has no ranking: its Spearman ρ is NaN (stored as null).
"""
from __future__ import annotations

import math

import numpy as np
from scipy.stats import rankdata

TOP_FRACTION = 0.10


def _flat(maps) -> np.ndarray:
    a = maps.detach().cpu().numpy() if hasattr(maps, "detach") else np.asarray(maps)
    return a.reshape(a.shape[0], -1).astype(np.float64)


def spearman(base, other) -> np.ndarray:
    """Per sample Spearman ρ of two (N, H, W) map batches: Pearson correlation of average ranks."""
    a, b = _flat(base), _flat(other)
    if a.shape != b.shape:
        raise ValueError(f"maps of different shapes: {a.shape} and {b.shape}")
    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denominator = np.sqrt((ra ** 2).sum(axis=1) * (rb ** 2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (ra * rb).sum(axis=1) / denominator, np.nan)


def top_mask(maps, fraction: float = TOP_FRACTION) -> np.ndarray:
    """(N, pixels) bool: each sample's ``ceil(fraction · pixels)`` largest pixels."""
    a = _flat(maps)
    k = math.ceil(fraction * a.shape[1])
    order = np.argsort(-a, axis=1, kind="stable")[:, :k]  # ties: the lower pixel index first
    mask = np.zeros(a.shape, dtype=bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask


def top_iou(base, other, fraction: float = TOP_FRACTION) -> np.ndarray:
    """Per sample intersection over union of the two maps' top-``fraction`` pixel sets."""
    a, b = top_mask(base, fraction), top_mask(other, fraction)
    if a.shape != b.shape:
        raise ValueError(f"maps of different shapes: {a.shape} and {b.shape}")
    return (a & b).sum(axis=1) / (a | b).sum(axis=1)
