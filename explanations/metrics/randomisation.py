"""Model-parameter randomisation sanity check (Adebayo et al. 2018), cascading from the top, as
Quantus 0.6.0's ``quantus.MPRT`` randomises, scored per clip.

A copy of the model has its layers re-initialised one by one from the output back
(``named_modules`` with ``reset_parameters``, reversed; ``torch.manual_seed(seed + 1)`` before
each, as Quantus does), and after each *stage* (``fc``, ``layer4`` ... ``layer1``, the stem;
``granularity="module"``: after every layer, Quantus' own checkpoints) the clip is explained
again with the same method and target. The score per clip is the mean Spearman rank
correlation of the original map with the randomised maps over those checkpoints (higher = the
explanation depends less on the learned weights: worse).

Speed: one copy randomised in place, layer after layer (as Quantus); the original map is the
caller's (Quantus computes it again); all clips explained in one batch per checkpoint; and for a
torchvision ResNet the stages below the lowest randomised one run once per stage instead of once
per map (``explanations.metrics.prefix``: bitwise the same maps). ``reuse_prefix=False`` turns the
last off.

Quantus defect not copied: its ``return_average_correlation`` means include the correlation of
the original map with itself (it skips a key ``"orig"`` but stores ``"original"``); ours average
the randomised checkpoints only. Its per-layer values are ours at ``granularity="module"``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from explanations.metrics.prefix import STAGES, ReusedPrefix, reusable
from explanations.saliency_change import spearman

GRANULARITIES = ("stage", "module")
ORDER = ("stem", *STAGES, "layer4", "fc")  # a ResNet's stages, bottom up
SEED = 42  # Quantus' default


@dataclass
class RandomisationResult:
    score: np.ndarray  # (N,) mean rank correlation over the checkpoints
    correlations: dict[str, np.ndarray]  # checkpoint (last layer randomised) -> (N,)


def stage_of(name: str) -> str:
    """A ResNet layer's stage: ``layer3.1.conv2`` → ``layer3``, ``fc`` → ``fc``, else the stem."""
    head = name.split(".")[0]
    return head if head.startswith("layer") or head == "fc" else "stem"


def reused_depth(stage: str) -> int:
    """How many of ``STAGES`` lie below ``stage`` (the lowest randomised) and may be reused."""
    return min(ORDER.index(stage) - 1, len(STAGES)) if stage in ORDER else -1


def randomisation(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, maps: torch.Tensor,
                  explain: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor], *,
                  granularity: str = "stage", seed: int = SEED, reuse_prefix: bool = True) -> RandomisationResult:
    """``maps`` (N, H, W): the original model's maps of ``x`` for ``target``; ``explain(model,
    x, target)`` → the maps of another model (the same method)."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    randomised = copy.deepcopy(model)
    layers = [(name, m) for name, m in randomised.named_modules() if hasattr(m, "reset_parameters")][::-1]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no layers with reset_parameters to randomise")
    reuse = reuse_prefix and reusable(randomised)
    view, view_depth = randomised, -1
    correlations = {}
    for i, (name, layer) in enumerate(layers):
        torch.manual_seed(seed + 1)
        layer.reset_parameters()
        last_of_stage = i + 1 == len(layers) or stage_of(layers[i + 1][0]) != stage_of(name)
        if granularity == "module" or last_of_stage:
            depth = reused_depth(stage_of(name)) if reuse else -1
            if depth != view_depth:  # top down: the reusable bottom only shrinks
                view, view_depth = (ReusedPrefix(randomised, depth) if depth >= 0 else randomised), depth
            other = explain(view, x, target)
            correlations[name] = spearman(maps, other)
    score = np.nanmean(np.stack(list(correlations.values())), axis=0)
    return RandomisationResult(score=score, correlations=correlations)
