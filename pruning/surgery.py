"""Physical channel removal: replace convolutions, BatchNorms and the fc by narrower copies.

Each replacement keeps its module name, so ``training.models.model_spec`` describes the
pruned model and ``build_from_spec`` rebuilds it from a checkpoint alone.
"""
from __future__ import annotations

import torch
from torch import nn

from pruning.groups import ChannelGroup


def _new_like(old: nn.Module, new: nn.Module) -> nn.Module:
    """Carry over the training flag and which parameters are frozen."""
    new.train(old.training)
    for (_, old_param), (_, new_param) in zip(old.named_parameters(), new.named_parameters()):
        new_param.requires_grad_(old_param.requires_grad)
    return new


@torch.no_grad()
def _slice_conv(conv: nn.Conv2d, *, keep_out=None, keep_in=None) -> nn.Conv2d:
    if conv.groups != 1:
        raise ValueError(f"cannot prune a grouped convolution (groups={conv.groups})")
    weight = conv.weight
    if keep_out is not None:
        weight = weight[keep_out]
    if keep_in is not None:
        weight = weight[:, keep_in]
    new = nn.Conv2d(weight.shape[1], weight.shape[0], conv.kernel_size, stride=conv.stride, padding=conv.padding,
                    dilation=conv.dilation, bias=conv.bias is not None, padding_mode=conv.padding_mode,
                    device=weight.device, dtype=weight.dtype)
    if _channels_last(conv.weight):  # keep the memory format (a channels_last model stays one)
        new = new.to(memory_format=torch.channels_last)
    new.weight.copy_(weight)
    if conv.bias is not None:
        new.bias.copy_(conv.bias if keep_out is None else conv.bias[keep_out])
    return _new_like(conv, new)


def _channels_last(weight: torch.Tensor) -> bool:
    """Stored channels_last (and not also plain contiguous, as a 1×1 kernel with one input is)."""
    return weight.dim() == 4 and weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()


@torch.no_grad()
def _slice_bn(bn: nn.BatchNorm2d, keep) -> nn.BatchNorm2d:
    new = nn.BatchNorm2d(len(keep), eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                         track_running_stats=bn.track_running_stats,
                         device=bn.running_mean.device if bn.running_mean is not None else bn.weight.device,
                         dtype=bn.weight.dtype if bn.affine else bn.running_mean.dtype)
    for name in ("weight", "bias", "running_mean", "running_var"):
        if getattr(bn, name) is not None:
            getattr(new, name).copy_(getattr(bn, name)[keep])
    if bn.num_batches_tracked is not None:
        new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return _new_like(bn, new)


@torch.no_grad()
def _slice_linear(linear: nn.Linear, keep_in) -> nn.Linear:
    new = nn.Linear(len(keep_in), linear.out_features, bias=linear.bias is not None,
                    device=linear.weight.device, dtype=linear.weight.dtype)
    new.weight.copy_(linear.weight[:, keep_in])
    if linear.bias is not None:
        new.bias.copy_(linear.bias)
    return _new_like(linear, new)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def remove_channels(model: nn.Module, plan: list[tuple[ChannelGroup, torch.Tensor]]) -> nn.Module:
    """Keep only the planned channels of each group, in place; returns ``model``.

    ``plan`` pairs each group with the sorted indices of the channels it keeps
    (``pruning.slimming.select_channels``). Groups keeping every channel are left alone.
    """
    for group, keep in plan:
        if len(keep) == group.width:
            continue
        if len(keep) == 0:
            raise ValueError(f"plan would empty channel group {group.name}")
        keep = keep.to(next(model.parameters()).device)
        for name in group.producers:
            _replace(model, name, _slice_conv(model.get_submodule(name), keep_out=keep))
        for name in group.bns:
            _replace(model, name, _slice_bn(model.get_submodule(name), keep))
        for name in group.consumers:
            module = model.get_submodule(name)
            new = _slice_linear(module, keep) if isinstance(module, nn.Linear) else _slice_conv(module, keep_in=keep)
            _replace(model, name, new)
    return model
