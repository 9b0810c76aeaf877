"""Which channels of a torchvision ResNet can be removed, and which modules must change together.

A *channel group* is one feature tensor whose channels are removed as a unit: the BatchNorms
that normalise it (their |γ| is the channel's importance), the convolutions that write it
(output channels) and the convolutions / linear layer that read it (input channels).

- Internal groups: the channels inside a block (BasicBlock: after bn1; Bottleneck: after
  bn1 and after bn2). One BatchNorm each.
- Residual groups (optional): the channels tied together by the residual additions. The
  stem output continues through every block of a stage until a block with a downsample
  starts a new tensor; the last one is read by the fc layer. Each holds several BatchNorms.

Module names are the names of ``model.named_modules()``; the stem's input channels (3 for
the spatial stream, 20 for the temporal one) and the fc's outputs are never pruned.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck


@dataclass
class ChannelGroup:
    """The channels of one tensor, removed together."""

    name: str
    bns: list[str] = field(default_factory=list)
    producers: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    width: int = 0


def fc_name(model: nn.Module) -> str:
    """Name of the classifier's Linear: ``fc`` itself, or the one Linear inside an ``fc`` Sequential."""
    fc = getattr(model, "fc", None)
    if isinstance(fc, nn.Linear):
        return "fc"
    linears = [n for n, m in fc.named_children() if isinstance(m, nn.Linear)] if fc is not None else []
    if len(linears) != 1:
        raise ValueError(f"{type(model).__name__}: expected `fc` to be a Linear or to hold exactly one Linear")
    return f"fc.{linears[0]}"


def _blocks(model: nn.Module):
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        layer = getattr(model, stage, None)
        if not isinstance(layer, nn.Sequential):
            raise ValueError(f"{type(model).__name__} is not a torchvision ResNet: no `{stage}` Sequential")
        for index, block in enumerate(layer):
            if not isinstance(block, (BasicBlock, Bottleneck)):
                raise ValueError(f"{stage}.{index} is a {type(block).__name__}, not a BasicBlock or Bottleneck")
            yield f"{stage}.{index}", block


def _last_conv_bn(block: nn.Module) -> tuple[str, str]:
    return ("conv2", "bn2") if isinstance(block, BasicBlock) else ("conv3", "bn3")


def internal_groups(model: nn.Module) -> list[ChannelGroup]:
    groups = []
    for prefix, block in _blocks(model):
        pairs = [("conv1", "bn1", "conv2")]
        if isinstance(block, Bottleneck):
            pairs.append(("conv2", "bn2", "conv3"))
        for producer, bn, consumer in pairs:
            groups.append(ChannelGroup(
                name=f"{prefix}.{bn}", bns=[f"{prefix}.{bn}"], producers=[f"{prefix}.{producer}"],
                consumers=[f"{prefix}.{consumer}"], width=getattr(block, bn).num_features))
    return groups


def residual_groups(model: nn.Module) -> list[ChannelGroup]:
    current = ChannelGroup(name="residual:bn1", bns=["bn1"], producers=["conv1"], width=model.bn1.num_features)
    groups = [current]
    for prefix, block in _blocks(model):
        current.consumers.append(f"{prefix}.conv1")
        conv, bn = _last_conv_bn(block)
        if block.downsample is not None:
            current.consumers.append(f"{prefix}.downsample.0")
            current = ChannelGroup(name=f"residual:{prefix}.downsample.1", width=getattr(block, bn).num_features,
                                   bns=[f"{prefix}.downsample.1"], producers=[f"{prefix}.downsample.0"])
            groups.append(current)
        current.bns.append(f"{prefix}.{bn}")
        current.producers.append(f"{prefix}.{conv}")
    current.consumers.append(fc_name(model))
    return groups


def channel_groups(model: nn.Module, *, residual: bool = False) -> list[ChannelGroup]:
    """All prunable channel groups: internal ones, plus the residual ones when ``residual``."""
    groups = internal_groups(model)
    return groups + residual_groups(model) if residual else groups


def group_scores(model: nn.Module, group: ChannelGroup) -> torch.Tensor:
    """Importance of each channel: mean |γ| over the group's BatchNorms.

    The mean (not the sum) keeps a residual group's scores on the same scale as a single
    BatchNorm's, so one global threshold treats both kinds of channel alike.
    """
    modules = dict(model.named_modules())
    gammas = torch.stack([modules[name].weight.detach().abs().float().cpu() for name in group.bns])
    return gammas.mean(dim=0)


def count_prunable_channels(model: nn.Module, *, residual: bool = False) -> int:
    return sum(group.width for group in channel_groups(model, residual=residual))
