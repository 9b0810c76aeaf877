"""Network Slimming with physical channel removal for torchvision ResNets (both streams)."""
from __future__ import annotations

import copy

from torch import nn

from pruning.groups import group_scores
from pruning.slimming import Scores, select_channels
from pruning.surgery import remove_channels


def prune_model(model: nn.Module, ratio: float, *, residual: bool = False, min_channels: int | float = 8,
                round_to: int = 1, scores: Scores = group_scores) -> nn.Module:
    """A physically smaller copy of ``model`` without the globally lowest-|γ| fraction ``ratio``
    of its prunable channels (``model`` itself is not modified).

    ``residual`` also prunes the channels tied by residual additions (stem, stage outputs,
    downsample, fc input). ``min_channels`` (a count, or a fraction of the width when in (0, 1))
    is what every layer keeps; ``round_to`` keeps every pruned width a multiple of it.
    ``scores`` ranks the channels (|γ| by default; ``pruning.slimming.random_scores``).
    """
    pruned = copy.deepcopy(model)
    plan = select_channels(pruned, ratio, residual=residual, min_channels=min_channels, round_to=round_to,
                           scores=scores)
    return remove_channels(pruned, plan)


__all__ = ["prune_model"]
