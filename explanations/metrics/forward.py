"""Batched forward passes shared by the faithfulness metrics: many perturbed inputs in, the
target's probability (or score) and the predicted class of each out."""
from __future__ import annotations

import numpy as np
import torch

from explanations.saliency import eval_mode

# Removing a pixel sets it to zero of the normalised input: the data (ImageNet) mean colour for
# the RGB stream, zero motion for the flow stream (its normalisation keeps 0 at zero motion).
REMOVED = 0.0


def as_tensor(a, device, dtype=torch.float32) -> torch.Tensor:
    return (a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))).to(device=device, dtype=dtype)


def pixel_attribution(attributions, n: int, h: int, w: int) -> np.ndarray:
    """(N, H, W) or (N, C|1, H, W) → (N, H, W) float64 (mean over channels)."""
    a = attributions.detach().cpu().numpy() if isinstance(attributions, torch.Tensor) else np.asarray(attributions)
    a = a.astype(np.float64)
    if a.shape == (n, h, w):
        return a
    if a.ndim == 4 and a.shape[0] == n and a.shape[2:] == (h, w):
        return a.mean(axis=1)
    raise ValueError(f"attributions of shape {a.shape} do not fit inputs of shape (N={n}, H={h}, W={w})")


def pixel_ranks(attribution: np.ndarray) -> np.ndarray:
    """(H, W) → (H, W) rank of each pixel, 0 = most relevant (ties: the earlier pixel first)."""
    order = np.argsort(-attribution.ravel(), kind="stable")
    ranks = np.empty(order.size, dtype=np.int64)
    ranks[order] = np.arange(order.size)
    return ranks.reshape(attribution.shape)


def forward_in_batches(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *,
                       batch_size: int, softmax: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(target probability (M,), predicted class (M,)) of ``inputs`` (M, C, H, W), on the
    model's device, ``batch_size`` inputs per pass."""
    scores, predicted = [], []
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(inputs), batch_size):
            logits = model(inputs[start:start + batch_size])
            out = torch.softmax(logits, dim=1) if softmax else logits
            scores.append(out.gather(1, targets[start:start + batch_size, None])[:, 0])
            predicted.append(logits.argmax(1))
    return torch.cat(scores), torch.cat(predicted)
