"""ROAD, RemOve And Debias (Rong et al. 2022), most relevant first, computed as Quantus 0.6.0's
``quantus.ROAD`` computes it, with its forward passes batched and one defect fixed.

Per sample and percentage p of ``PERCENTAGES`` (Quantus' default, 1, 3, ..., 99): the
``int(H * W * p / 100)`` most relevant pixels (all channels) are replaced by noisy linear
imputation (each by the weighted mean of its 8 neighbours, solved as one sparse linear system,
plus Gaussian noise of standard deviation ``noise``); the curve holds 1 where the model still
predicts the target class, else 0. The score is the curve's mean over the percentages (lower:
the attribution found what the prediction needs). Noise comes from ``np.random.RandomState(seed)``
drawn in Quantus' order (percentage, then sample), so with the same seed in Quantus' global
``np.random`` the imputed inputs are the same bits.

Quantus defect fixed: Quantus broadcasts a 1-channel attribution over the C channels and ranks
the C·H·W entries, but takes ``int(H * W * p / 100)`` of them and hands them to the imputation as
*pixel* indices. With C > 1 the tied channel copies of a pixel come in an arbitrary order, so it
removes fewer pixels than p % (about a C-th) or indexes past the image (IndexError). Here pixels
are ranked (ties: the earlier pixel first) and p % of them removed; Quantus' result is the same
when it is given the ranking in channel 0 (tests/test_metrics.py).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.sparse import csc_matrix
from scipy.sparse.linalg import spsolve

from explanations.metrics.deletion import CurveResult
from explanations.metrics.forward import as_tensor, forward_in_batches, pixel_attribution

PERCENTAGES = tuple(range(1, 100, 2))
NOISE = 0.01
# neighbour offsets (row, column) and weights of the imputation, as Quantus / Rong et al.
OFFSET_WEIGHTS = (((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
                  ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6))


def noisy_linear_imputation(image: np.ndarray, pixels: np.ndarray, noise: float,
                            rng: np.random.RandomState) -> np.ndarray:
    """``image`` (C, H, W) with ``pixels`` (flat indices into H·W) imputed; Quantus'
    ``noisy_linear_imputation``, its sparse matrix built at once instead of entry by entry."""
    c, h, w = image.shape
    flat = image.reshape(c, -1)
    k = len(pixels)
    known = np.ones(h * w, dtype=bool)
    known[pixels] = False
    variable = np.zeros(h * w, dtype=np.int64)
    variable[pixels] = np.arange(k)
    b = np.zeros((k, c))
    sum_neighbours = np.ones(k)
    rows, cols, values = [np.arange(k)], [np.arange(k)], []
    row, col = pixels // w, pixels % w
    for (dr, dc), weight in OFFSET_WEIGHTS:
        valid = (row + dr >= 0) & (col + dc >= 0) & (row + dr < h) & (col + dc < w)
        ids = np.flatnonzero(valid)
        neighbour = pixels[valid] + dr * w + dc
        inside = known[neighbour]
        b[ids[inside], :] -= weight * flat[:, neighbour[inside]].T
        rows.append(ids[~inside])
        cols.append(variable[neighbour[~inside]])
        values.append(np.full(int((~inside).sum()), weight))
        sum_neighbours[~valid] -= weight
    values.insert(0, -sum_neighbours)
    a = csc_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(k, k))
    solution = np.transpose(spsolve(a, b))
    out = flat.copy()
    out[:, pixels] = solution + noise * rng.randn(*solution.shape)
    return out.reshape(image.shape)


def road(model: torch.nn.Module, x, attributions, target, *, percentages=PERCENTAGES,
         noise: float = NOISE, seed: int = 0, batch_size: int = 64) -> CurveResult:
    """ROAD (most relevant first) of each sample of ``x`` (N, C, H, W) for class ``target``."""
    device = next(model.parameters()).device
    x_host = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    n, _, h, w = x_host.shape
    attribution = pixel_attribution(attributions, n, h, w)
    targets = as_tensor(target, device, torch.long).reshape(-1)
    if len(targets) != n:
        raise ValueError(f"{len(targets)} targets for {n} inputs")
    if not percentages or not all(0 < p < 100 for p in percentages):
        raise ValueError(f"percentages must be in (0, 100), got {percentages!r}")
    order = np.argsort(-attribution.reshape(n, -1), axis=1, kind="stable")
    rng = np.random.RandomState(seed)
    correct: list[bool] = []
    pending: list[np.ndarray] = []  # imputed inputs not yet forwarded, and their targets
    pending_targets: list[torch.Tensor] = []

    def flush():
        wanted = torch.stack(pending_targets)
        _, predicted = forward_in_batches(model, as_tensor(np.stack(pending), device), wanted,
                                          batch_size=batch_size)
        correct.extend((predicted == wanted).tolist())
        pending.clear()
        pending_targets.clear()

    for p in percentages:  # Quantus' order: the noise of (p, sample) is drawn in this order
        k = int(h * w * p / 100)
        for i in range(n):
            pending.append(noisy_linear_imputation(x_host[i], order[i, :k], noise, rng))
            pending_targets.append(targets[i])
            if len(pending) == batch_size:
                flush()
    if pending:
        flush()
    curves = np.asarray(correct, dtype=np.float64).reshape(len(percentages), n).T
    return CurveResult(score=curves.mean(axis=1), curves=curves)
