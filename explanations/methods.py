"""Explanation methods of the grid (``explain.methods``), batched, for both streams.

Each returns one 2-D map per clip, computed by captum's own implementation (so it equals
captum's call on the same inputs and seed; tests/test_methods.py):

- ``vanilla_gradient`` (Simonyan et al. 2013, the study's): |d logit / d x|
  (``explanations.saliency``, equal to ``captum.attr.Saliency``).
- ``integrated_gradients`` (Sundararajan et al. 2017): baseline = zero of the normalised input,
  i.e. the data mean (ImageNet mean colour for RGB, zero motion for flow); ``ig_steps`` steps of
  captum's default Gauss-Legendre rule; the map is |attribution|.
- ``smoothgrad`` (Smilkov et al. 2017): the mean |gradient| over ``smoothgrad_samples`` copies of
  the input with Gaussian noise of standard deviation ``smoothgrad_sigma`` (in units of the
  normalised input), captum's ``NoiseTunnel(Saliency)``; the noise is drawn from torch's
  generator seeded with ``seed`` for every batch (the caller's RNG state is restored after), so
  a clip's noise depends on its place in the batch, as in captum.
- ``grad_cam`` (Selvaraju et al. 2017): on the output of the last residual stage (``layer4``),
  ReLU, upsampled bilinearly to the input size; one map for all channels already.

Gradient maps (N, C, H, W) are reduced to (N, H, W) over channels with ``explain.reduce``, as
the vanilla gradient always was.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from explanations.saliency import Target, eval_mode, input_gradient, reduce_channels, resolve_target

METHODS = ("vanilla_gradient", "integrated_gradients", "smoothgrad", "grad_cam")


@dataclass(frozen=True)
class MethodSettings:
    reduce: str = "max"  # over channels of gradient maps (explanations.saliency.reduce_channels)
    ig_steps: int = 32
    smoothgrad_sigma: float = 0.5  # about a tenth of the normalised RGB range
    smoothgrad_samples: int = 16
    seed: int = 0
    internal_batch: int = 64  # inputs per forward/backward pass inside IG and SmoothGrad


@dataclass
class Explanation:
    maps: torch.Tensor  # (N, H, W) on the model's device
    grad: torch.Tensor | None  # (N, C, H, W) per-channel map before the reduction; None for grad_cam
    logits: torch.Tensor  # (N, classes) of the unperturbed input
    target: torch.Tensor  # (N,) class explained


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown explanation method {method!r}; allowed: {list(METHODS)}")


def last_residual_stage(model: torch.nn.Module) -> torch.nn.Module:
    """The module Grad-CAM explains: a torchvision ResNet's ``layer4`` (also after pruning)."""
    stage = getattr(model, "layer4", None)
    if stage is None:
        raise ValueError(f"grad_cam needs a ResNet with a 'layer4' stage; {type(model).__name__} has none")
    return stage


def _logits_and_target(model, x, target: Target):
    with torch.no_grad():
        logits = model(x)
    return logits, resolve_target(target, logits)


def explain(method: str, model: torch.nn.Module, x: torch.Tensor, target: Target,
            settings: MethodSettings = MethodSettings()) -> Explanation:
    """One method's maps of a batch ``x`` (N, C, H, W) for ``target`` (class indices or
    ``"predicted"``), on the model's device."""
    check_method(method)
    from captum.attr import IntegratedGradients, LayerGradCam, NoiseTunnel, Saliency

    device = next(model.parameters()).device
    x = x.detach().to(device=device, dtype=torch.float32)
    with eval_mode(model):
        if method == "vanilla_gradient":
            grad, logits, target = input_gradient(model, x, target)
            return Explanation(reduce_channels(grad, settings.reduce), grad, logits, target)
        logits, target = _logits_and_target(model, x, target)
        if method == "integrated_gradients":
            attribution = IntegratedGradients(model).attribute(
                x, baselines=torch.zeros_like(x), target=target, n_steps=settings.ig_steps,
                internal_batch_size=settings.internal_batch).abs()
        elif method == "smoothgrad":
            per_pass = max(1, settings.internal_batch // max(len(x), 1))
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(settings.seed)
                attribution = NoiseTunnel(Saliency(model)).attribute(
                    x, nt_type="smoothgrad", nt_samples=settings.smoothgrad_samples,
                    nt_samples_batch_size=per_pass, stdevs=float(settings.smoothgrad_sigma), target=target)
        else:
            cam = LayerGradCam(model, last_residual_stage(model)).attribute(x, target=target,
                                                                          relu_attributions=True)
            maps = F.interpolate(cam, size=x.shape[2:], mode="bilinear")[:, 0]
            return Explanation(maps.detach(), None, logits, target)
    attribution = attribution.detach()
    return Explanation(reduce_channels(attribution, settings.reduce), attribution, logits, target)
