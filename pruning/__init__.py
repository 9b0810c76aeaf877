"""Network Slimming with physical channel removal for torchvision ResNets (both streams)."""
from __future__ import annotations

import copy

from torch import nn

from pruning.slimming import select_channels
from pruning.surgery import remove_channels


def prune_model(model: nn.Module, ratio: float, *, residual: bool = False, min_channels: int | float = 8,
                round_to: int = 1) -> nn.Module:
    """A physically smaller copy of ``model`` without the globally lowest-|γ| fraction ``ratio``
    of its prunable channels (``model`` itself is not modified).

    ``residual`` also prunes the channels tied by residual additions (stem, stage outputs,
    downsample, fc input). ``min_channels`` (a count, or a fraction of the width when in (0, 1))
    is what every layer keeps; ``round_to`` keeps every pruned width a multiple of it.
    """
    pruned = copy.deepcopy(model)
    plan = select_channels(pruned, ratio, residual=residual, min_channels=min_channels, round_to=round_to)
    return remove_channels(pruned, plan)


__all__ = ["prune_model"]
