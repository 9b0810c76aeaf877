"""Reuse of the unrandomised bottom of a ResNet across the randomisation check's explanations.

The check randomises a ResNet from the top down, so while only ``fc`` and the stages above
``layerK`` are randomised, the stem and ``layer1`` ... ``layerK`` compute exactly what they computed
before for the same input. ``ReusedPrefix`` is a view of such a model that runs those bottom
stages once per distinct input and reuses their output (and, for gradients, their retained
autograd graph) for every later explanation of the same input: the explanations are bitwise the
ones of the whole model, with the bottom's forward pass done once instead of once per map.

It applies to a plain ``torchvision.models.ResNet`` only (its ``forward`` is known); ``layer4`` is
never reused, so hooks on it (Grad-CAM's) still fire.
"""
from __future__ import annotations

import torch
import torchvision

STAGES = ("layer1", "layer2", "layer3")  # the stages that may be reused, bottom up (never layer4)


def reusable(model: torch.nn.Module) -> bool:
    """A plain torchvision ResNet (a subclass may have changed the forward pass)."""
    return type(model) is torchvision.models.ResNet


class _Entry:
    """One input's bottom output; with ``graph``, also its autograd graph from a private copy of
    the input (a leaf nobody else can modify in place)."""

    def __init__(self, x: torch.Tensor, bottom: torch.nn.Module, graph: bool):
        self.graph = graph
        self.leaf = x.detach().clone().requires_grad_(graph)
        with torch.set_grad_enabled(graph):
            self.out = bottom(self.leaf)

    def matches(self, x: torch.Tensor, graph: bool) -> bool:
        return ((self.graph or not graph) and x.shape == self.leaf.shape and x.dtype == self.leaf.dtype
                and x.device == self.leaf.device and torch.equal(x.detach(), self.leaf.detach()))


class _Reuse(torch.autograd.Function):
    """``entry.out`` as a function of ``x``: its backward pulls the gradient through the
    retained graph of the bottom (retain_graph: the next explanation needs it again)."""

    @staticmethod
    def forward(ctx, x, entry):
        ctx.entry = entry
        return entry.out.detach().clone()  # a fresh tensor: later in-place ops cannot reach the cache

    @staticmethod
    def backward(ctx, grad):
        entry = ctx.entry
        (grad_x,) = torch.autograd.grad(entry.out, entry.leaf, grad, retain_graph=True)
        return grad_x, None


class ReusedPrefix(torch.nn.Module):
    """``net`` (a torchvision ResNet) whose stem and first ``depth`` stages (0-3) run once per
    distinct input. The last ``keep`` inputs are kept: an explanation's batch, and for methods
    that first take the logits without gradients (SmoothGrad, IG, Grad-CAM) that pass too;
    more would hold more graphs in memory. ``net``'s own forward hooks are kept, so whoever
    timed ``net`` still sees its forward passes."""

    def __init__(self, net: torch.nn.Module, depth: int, keep: int = 2):
        super().__init__()
        if not reusable(net) or not 0 <= depth <= len(STAGES):
            raise ValueError(f"ReusedPrefix needs a torchvision ResNet and depth 0-{len(STAGES)}, "
                             f"got {type(net).__name__} and {depth}")
        self.net = net
        self.layer4 = net.layer4  # Grad-CAM's layer (explanations.methods.last_residual_stage)
        self.bottom = torch.nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool,
                                          *(getattr(net, s) for s in STAGES[:depth]))
        self.top = [getattr(net, s) for s in (*STAGES[depth:], "layer4")]
        self.keep = keep
        self.entries: list[_Entry] = []  # most recently used last
        self._forward_pre_hooks.update(net._forward_pre_hooks)
        self._forward_hooks.update(net._forward_hooks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        graph = torch.is_grad_enabled() and x.requires_grad
        entry = next((e for e in self.entries if e.matches(x, graph)), None)
        if entry is None:
            del self.entries[:len(self.entries) + 1 - self.keep]  # free old graphs before building
            entry = _Entry(x, self.bottom, graph)
        else:
            self.entries.remove(entry)
        self.entries.append(entry)
        h = _Reuse.apply(x, entry) if graph else entry.out.detach().clone()
        for stage in self.top:
            h = stage(h)
        return self.net.fc(torch.flatten(self.net.avgpool(h), 1))
