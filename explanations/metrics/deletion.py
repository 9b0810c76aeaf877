"""Deletion and insertion AUC (Petsiuk et al. 2018, RISE), our own (Quantus 0.6 has neither).

Pixels go in order of attribution, most relevant first (ties: the earlier pixel). After step j
of ``steps`` the first ``round(j * H * W / steps)`` pixels are

- deletion: removed from the clip (all channels set to zero of the normalised input: the mean
  colour for RGB, zero motion for flow; ``explanations.metrics.forward.REMOVED``),
- insertion: inserted into the fully removed clip (step 0 is the removal baseline itself),

and the curve holds the softmax probability of the target class, steps 0..steps. The score is
the area under the curve over the removed (inserted) fraction 0..1 (trapezoid rule): deletion
is better when low, insertion when high.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from explanations.metrics.forward import REMOVED, as_tensor, forward_in_batches, pixel_attribution, pixel_ranks

MODES = ("deletion", "insertion")


@dataclass
class CurveResult:
    score: np.ndarray  # (N,) area under the curve over the fraction 0..1
    curves: np.ndarray  # (N, steps + 1) target probability after step 0..steps


def deletion_insertion(model: torch.nn.Module, x, attributions, target, *, mode: str = "deletion",
                       steps: int = 50, batch_size: int = 64) -> CurveResult:
    """Deletion or insertion AUC of every sample of ``x`` (N, C, H, W) for class ``target``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    device = next(model.parameters()).device
    x = as_tensor(x, device)
    n, _, h, w = x.shape
    attribution = pixel_attribution(attributions, n, h, w)
    targets = as_tensor(target, device, torch.long).reshape(-1)
    if len(targets) != n:
        raise ValueError(f"{len(targets)} targets for {n} inputs")
    counts = torch.as_tensor(np.round(np.arange(steps + 1) * h * w / steps).astype(np.int64), device=device)
    curves = np.empty((n, steps + 1))
    for i in range(n):
        ranks = torch.as_tensor(pixel_ranks(attribution[i]), device=device)
        gone = ranks[None] < counts[:, None, None]  # (steps + 1, H, W): removed / inserted so far
        keep = ~gone if mode == "deletion" else gone
        inputs = torch.where(keep[:, None], x[i][None], torch.full_like(x[i][None], REMOVED))
        scores, _ = forward_in_batches(model, inputs, targets[i].repeat(steps + 1), batch_size=batch_size)
        curves[i] = scores.double().cpu().numpy()
    return CurveResult(score=np.trapezoid(curves, dx=1.0 / steps, axis=1), curves=curves)
