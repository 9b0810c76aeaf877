"""How much a pruned model really lost: channels, parameters and FLOPs, as fractions of the original."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pruning.groups import count_prunable_channels


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_size: int = 224) -> int:
    """FLOPs of one forward pass on one image (convolutions and the fc; a multiply-add is 2).
    They depend on the layer shapes only, so a shape counted once is not run again: a pruning
    chain asks for its baseline's (and an unpruned control's) FLOPs at every step."""
    key = (input_size, tuple((name, tuple(p.shape)) for name, p in model.named_parameters()))
    if key not in _FLOPS:
        _FLOPS[key] = _run_flop_counter(model, input_size)
    return _FLOPS[key]


_FLOPS: dict[tuple, int] = {}


@torch.no_grad()
def _run_flop_counter(model: nn.Module, input_size: int) -> int:
    device = next(model.parameters()).device
    x = torch.zeros(1, model.conv1.in_channels, input_size, input_size, device=device)
    was_training = model.training
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops()


def pruning_stats(original: nn.Module, pruned: nn.Module, *, residual: bool = False,
                  input_size: int = 224) -> dict[str, float]:
    """Fractions (0–1) of prunable channels, parameters and FLOPs that ``pruned`` lacks against ``original``,
    keyed like the `accuracy` table's columns."""
    def removed(before: int, after: int) -> float:
        return 1.0 - after / before

    return {
        "channels_removed": removed(count_prunable_channels(original, residual=residual),
                                    count_prunable_channels(pruned, residual=residual)),
        "params_removed": removed(count_params(original), count_params(pruned)),
        "flops_removed": removed(count_flops(original, input_size), count_flops(pruned, input_size)),
    }
