"""Vanilla-gradient saliency (Simonyan et al. 2013): |d score_target / d x| of the pre-softmax
class score, batched, for both streams.

The temporal stream's input stacks the 10 x-fields (channels 0..9) and then the 10 y-fields
(channels 10..19), so one flow-field pair (the x and y of step i) is channels i and 10+i.
"""
from __future__ import annotations

import contextlib
from typing import Sequence, Union

import torch

from shards.format import STACK

REDUCTIONS = ("max", "mean", "sum", "none")
Target = Union[torch.Tensor, Sequence[int], str]


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """Evaluation mode for the duration (batch norm uses running statistics, so samples of a
    batch cannot influence each other), restoring the previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def resolve_target(target: Target, logits: torch.Tensor) -> torch.Tensor:
    """Class index per sample: the given labels, or the predicted class for ``"predicted"``."""
    if isinstance(target, str):
        if target != "predicted":
            raise ValueError(f"target must be class indices or 'predicted', got {target!r}")
        return logits.argmax(dim=1)
    target = torch.as_tensor(target, dtype=torch.long, device=logits.device).reshape(-1)
    if target.numel() != logits.shape[0]:
        raise ValueError(f"{target.numel()} targets for a batch of {logits.shape[0]} inputs")
    return target


def input_gradient(model: torch.nn.Module, x: torch.Tensor, target: Target
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(|d logit_target / d x| (N, C, H, W), logits (N, classes), target (N,)).

    One backward pass for the whole batch: the summed target scores have, per sample, the
    gradient of that sample's own score. Parameter gradients are not touched."""
    device = next(model.parameters()).device
    x = x.detach().to(device=device, dtype=torch.float32).requires_grad_(True)
    with eval_mode(model), torch.enable_grad():
        logits = model(x)
        target = resolve_target(target, logits.detach())
        score = logits.gather(1, target[:, None]).sum()
        (grad,) = torch.autograd.grad(score, x)
    return grad.abs(), logits.detach(), target


def reduce_channels(grad: torch.Tensor, reduce: str = "max", dim: int = 1) -> torch.Tensor:
    """Collapse the channel axis: ``max`` (Simonyan et al.), ``mean``, ``sum`` or ``none``."""
    if reduce == "max":
        return grad.amax(dim=dim)
    if reduce == "mean":
        return grad.mean(dim=dim)
    if reduce == "sum":
        return grad.sum(dim=dim)
    if reduce == "none":
        return grad
    raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")


def vanilla_gradient(model: torch.nn.Module, x: torch.Tensor, target: Target,
                     reduce: str = "max") -> torch.Tensor:
    """Saliency maps (N, H, W), or (N, C, H, W) for ``reduce="none"``, on the model's device.

    ``target``: the class per sample (normally the true label) or ``"predicted"``."""
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    grad, _, _ = input_gradient(model, x, target)
    return reduce_channels(grad, reduce)


def flow_pair_maps(grad: torch.Tensor, reduce: str = "max") -> torch.Tensor:
    """Temporal stream: one map per flow-field pair, (N, 20, H, W) → (N, 10, H, W), the pair
    (channels i and 10+i) reduced like the whole stack."""
    if grad.ndim != 4 or grad.shape[1] != 2 * STACK:
        raise ValueError(f"expected a (N, {2 * STACK}, H, W) gradient, got {tuple(grad.shape)}")
    if reduce == "none":
        raise ValueError("flow_pair_maps needs a reduction (max, mean or sum)")
    pairs = grad.reshape(grad.shape[0], 2, STACK, *grad.shape[2:])  # (N, xy, step, H, W)
    return reduce_channels(pairs, reduce, dim=1)
