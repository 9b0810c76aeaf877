"""Network Slimming (Liu et al., 2017): the L1 penalty on BatchNorm γ and the global threshold."""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from pruning.groups import ChannelGroup, channel_groups, group_scores


@torch.no_grad()
def bn_l1_subgradient(model: nn.Module, s: float, *, residual: bool = True) -> None:
    """Add ``s·sign(γ)`` to the weight grad of every prunable BatchNorm (call after backward).

    With ``residual`` (the default) the BatchNorms of residual groups are penalised too, as
    in the paper, which penalises every BatchNorm.
    """
    if s == 0:
        return
    modules = dict(model.named_modules())
    for group in channel_groups(model, residual=residual):
        for name in group.bns:
            weight = modules[name].weight
            if weight.grad is not None:
                weight.grad.add_(torch.sign(weight), alpha=s)


def min_keep(width: int, min_channels: int | float, round_to: int) -> int:
    """Channels a layer of ``width`` always keeps: ``min_channels`` (or that fraction of
    ``width``), at least 1, rounded up to a multiple of ``round_to``, at most ``width``."""
    if isinstance(min_channels, float) and 0 < min_channels < 1:
        base = math.ceil(min_channels * width)
    else:
        base = int(min_channels)
    return min(width, math.ceil(max(1, base) / round_to) * round_to)


Scores = Callable[[nn.Module, ChannelGroup], torch.Tensor]


def random_scores(seed: int) -> Scores:
    """The ``random`` control's criterion (issue 27; Li et al. 2022, "Revisiting Random Channel
    Pruning"): each channel gets a uniform random score from a generator seeded by ``seed``, drawn
    group by group in ``channel_groups`` order, so one seed always ranks the same channels."""
    generator = torch.Generator().manual_seed(seed)
    return lambda model, group: torch.rand(group.width, generator=generator)


def select_channels(model: nn.Module, ratio: float, *, residual: bool = False, min_channels: int | float = 8,
                    round_to: int = 1, scores: Scores = group_scores) -> list[tuple[ChannelGroup, torch.Tensor]]:
    """Choose which channels to keep: one global threshold on |γ| over all prunable channels
    (``scores``: |γ| by default, ``random_scores`` for the random control; the ratio, minimum
    width and rounding rules are the same for any criterion).

    Removes ``round(ratio · N)`` of the N prunable channels, lowest score first, skipping a
    layer once it is down to its minimum. With ``round_to`` > 1 channels go in blocks so every
    kept width stays a multiple of ``round_to``; the count removed is then the nearest
    reachable one. Returns, per group, the sorted indices of the channels kept.
    """
    if not 0 <= ratio < 1:
        raise ValueError(f"prune ratio must be in [0, 1), got {ratio}")
    if round_to < 1:
        raise ValueError(f"round_to must be >= 1, got {round_to}")
    groups = channel_groups(model, residual=residual)
    target = round(ratio * sum(group.width for group in groups))

    orders, blocks = [], []  # blocks: (score that must fall under the threshold, group, size)
    score_of = scores
    for index, group in enumerate(groups):
        scores = score_of(model, group)
        order = torch.argsort(scores, stable=True)
        orders.append(order)
        removable = group.width - min_keep(group.width, min_channels, round_to)
        # the first block takes the remainder, so the kept width stays a multiple of round_to
        sizes = ([removable % round_to] if removable % round_to else []) + [round_to] * (removable // round_to)
        start = 0
        for size in sizes:
            blocks.append((scores[order[start + size - 1]].item(), index, size))
            start += size
    if target > sum(size for _, _, size in blocks):
        reachable = sum(size for _, _, size in blocks) / sum(group.width for group in groups)
        raise ValueError(f"cannot prune {ratio:.2%} of the prunable channels with min_channels={min_channels}, "
                         f"round_to={round_to}: at most {reachable:.2%}")

    removed = [0] * len(groups)
    total = 0
    for _, index, size in sorted(blocks, key=lambda block: (block[0], block[1])):  # stable: in-group order kept
        if total >= target or total + size - target >= target - total:
            break
        removed[index] += size
        total += size
    return [(group, torch.sort(order[removed[i]:]).values) for i, (group, order) in enumerate(zip(groups, orders))]


def prune_threshold(model: nn.Module, plan: list[tuple[ChannelGroup, torch.Tensor]]) -> float | None:
    """The |γ| threshold a ``select_channels`` plan applied: the highest score among the channels it
    removes (None when it removes none)."""
    removed = []
    for group, keep in plan:
        scores = group_scores(model, group)
        mask = torch.ones(group.width, dtype=torch.bool)
        mask[keep] = False
        removed.append(scores[mask])
    removed = torch.cat(removed) if removed else torch.empty(0)
    return float(removed.max()) if removed.numel() else None


# |γ| histogram bins: log-spaced from low to high, values outside clipped in. 1,000 a decade (each
# bin 0.23 % wide), so that a narrow distribution still has a shape: sparsity training at λ = 1e-4
# leaves the demo's |γ| within 0.88–1.0, which 60 bins over these 9 decades put in a single bin.
# Only non-empty bins are stored; the figure re-bins to the range the data covers.
GAMMA_BINS = (1e-8, 10.0, 9000)  # low, high, count


def gamma_histogram(model: nn.Module, *, residual: bool) -> list[dict]:
    """The |γ| (channel score) distribution of ``model``'s prunable channels as log-spaced bins:
    rows with ``bin``, ``bin_low``, ``bin_high``, ``count`` (the shape of the `gammas` table), the
    non-empty bins only."""
    scores = torch.cat([group_scores(model, group) for group in channel_groups(model, residual=residual)])
    low, high, n = GAMMA_BINS
    edges = torch.logspace(math.log10(low), math.log10(high), n + 1, dtype=torch.float64)
    clipped = scores.double().clamp(min=low, max=high)
    index = (torch.bucketize(clipped, edges, right=True) - 1).clamp(0, n - 1)
    counts = torch.bincount(index, minlength=n)
    return [{"bin": i, "bin_low": float(edges[i]), "bin_high": float(edges[i + 1]), "count": int(counts[i])}
            for i in torch.nonzero(counts).flatten().tolist()]
