"""IROF, Iterative Removal Of Features (Rieger & Hansen 2020), computed as Quantus 0.6.0's
``quantus.IROF`` computes it, but batched and without its batch dependence.

Per sample: SLIC superpixels of the input (``slic(image_channels_last, start_label=0)``, all
channels segmented together), segments sorted by mean attribution (descending), removed
cumulatively (replaced by a baseline value); after removing k segments the curve holds
p_target(x_k) / p_target(x) (softmax probabilities, or raw scores with ``softmax=False``), and
the score is the area over that curve as Quantus reports it: ``n_segments - trapz(curve)``.
A model that ignores its input has a flat curve of ones and scores 1.

Baselines:

- ``per_image_mean`` (default): a removed pixel takes the mean of its own original image (over
  all channels and pixels). A sample's score depends on nothing but that sample.
- ``quantus``: Quantus 0.6.0's batch semantics, for the equivalence test only. There, step k
  fills with the scalar mean of the whole *current* batch (all samples, already perturbed
  ones included), and a sample with fewer segments than the batch's largest has its curve
  padded with zeros before the trapezoid rule (adding half its last value to the area). Both
  make a sample's score depend on which samples share its batch (``batch_size`` in Quantus);
  here "the batch" is everything passed to one :func:`irof` call.

Speed: every (sample, removal step) input is built on the model's device from its image, a
rank map and a fill map, and all of them (originals included, ``n_segments + 1`` per sample,
never padded) run as large forward batches; the scores stay on the device until one copy at
the end.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from skimage.segmentation import slic

from analysis.saliency import eval_mode

BASELINES = ("per_image_mean", "quantus")


@dataclass
class IrofResult:
    score: np.ndarray  # (N,) area over the curve, Quantus-compatible
    normalised: np.ndarray  # (N,) score / n_segments
    curves: list[np.ndarray]  # per sample (n_segments,): ratio after removing 1..n segments
    n_segments: np.ndarray  # (N,) int


def slic_segments(x: np.ndarray) -> np.ndarray:
    """SLIC superpixels per sample exactly as Quantus calls it: (N, C, H, W) → (N, H, W) int."""
    return np.stack([slic(np.moveaxis(xi, 0, -1).astype("double"), start_label=0) for xi in x])


def as_numpy(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def attribution_per_pixel(attributions: np.ndarray, shape: tuple) -> np.ndarray:
    """(N, H, W), (N, 1, H, W) or (N, C, H, W) → (N, H, W) mean over channels. Since every pixel
    has all channels, a segment's mean of this equals Quantus's mean over a[:, segment]."""
    n, _, h, w = shape
    a = attributions.astype(np.float64)
    if a.shape == (n, h, w):
        return a
    if a.ndim == 4 and a.shape[0] == n and a.shape[2:] == (h, w) and a.shape[1] in (1, shape[1]):
        return a.mean(axis=1)
    raise ValueError(f"attributions of shape {a.shape} do not fit inputs of shape {shape}")


def removal_ranks(segments: np.ndarray, attribution: np.ndarray) -> tuple[np.ndarray, int]:
    """For one sample: (rank map (H, W): at which removal step, 0-based, each pixel's segment
    goes, number of segments). Segments go by mean attribution, highest first."""
    ids, labels = np.unique(segments, return_inverse=True)
    labels = labels.reshape(segments.shape)
    n = len(ids)
    counts = np.bincount(labels.ravel(), minlength=n)
    means = np.bincount(labels.ravel(), weights=attribution.ravel(), minlength=n) / counts
    order = np.argsort(-means, kind="stable")
    rank_of_label = np.empty(n, dtype=np.int64)
    rank_of_label[order] = np.arange(n)
    return rank_of_label[labels], n


def quantus_fill_values(x: np.ndarray, ranks: list[np.ndarray], n_segments: np.ndarray) -> np.ndarray:
    """Quantus's baseline per removal step: the scalar mean of the whole current batch.
    Step j (1-based) fills segment rank j-1 with mean(X_{j-1}); only that segment changes, so
    sum(X_j) = sum(X_{j-1}) + fill_j * C * |seg| - sum of the original x over seg."""
    n, c = x.shape[:2]
    steps = int(n_segments.max())
    removed_count = np.zeros(steps)  # C * pixels replaced at each step, over the batch
    removed_sum = np.zeros(steps)  # original values they had
    for xi, rank, k in zip(x, ranks, n_segments):
        removed_count[:k] += c * np.bincount(rank.ravel(), minlength=k)
        removed_sum[:k] += np.bincount(rank.ravel(), weights=xi.sum(axis=0, dtype=np.float64).ravel(), minlength=k)
    total, size = x.sum(dtype=np.float64), x.size
    fill = np.empty(steps)
    for j in range(steps):
        fill[j] = total / size
        total += fill[j] * removed_count[j] - removed_sum[j]
    return fill


def area_over_curve(curve: np.ndarray, pad_to: int = 0) -> float:
    """Quantus's score: number of segments minus the trapezoid area under the curve; with
    ``pad_to`` the curve is first zero-padded to that length, as Quantus does within a batch."""
    n = len(curve)
    padded = np.pad(curve.astype(np.float64), (0, max(pad_to - n, 0)))
    return n - float(np.trapezoid(padded))


def irof(model: torch.nn.Module, x, attributions, target, *, segments=None,
         baseline: str = "per_image_mean", softmax: bool = True, batch_size: int = 256) -> IrofResult:
    """IROF of each sample of ``x`` (N, C, H, W; float32, or float64 for a float64 model) for
    its class ``target`` (N,), given ``attributions`` (N, H, W) or (N, C|1, H, W) and optional
    precomputed ``segments`` (N, H, W) integer labels (default: SLIC as Quantus computes it).
    ``batch_size`` is the number of inputs per forward pass."""
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    x_host = as_numpy(x)
    x_host = x_host.astype(np.float64 if x_host.dtype == np.float64 else np.float32, copy=False)
    if x_host.ndim != 4:
        raise ValueError(f"expected inputs of shape (N, C, H, W), got {x_host.shape}")
    n, c, h, w = x_host.shape
    target_host = as_numpy(target).astype(np.int64).reshape(-1)
    if len(target_host) != n:
        raise ValueError(f"{len(target_host)} targets for {n} inputs")
    attribution = attribution_per_pixel(as_numpy(attributions), x_host.shape)
    segments = slic_segments(x_host) if segments is None else as_numpy(segments)
    if segments.shape != (n, h, w):
        raise ValueError(f"segments of shape {segments.shape} do not fit inputs of shape {x_host.shape}")

    ranks, n_segments = [], np.empty(n, dtype=np.int64)
    for i in range(n):
        rank, n_segments[i] = removal_ranks(segments[i], attribution[i])
        if n_segments[i] < 2:
            raise ValueError(f"sample {i} has {n_segments[i]} segment(s); IROF needs at least 2")
        ranks.append(rank)
    if baseline == "quantus":
        fill_by_rank = quantus_fill_values(x_host, ranks, n_segments)
        fill_maps = np.stack([fill_by_rank[rank] for rank in ranks])
    else:
        fill_maps = np.broadcast_to(x_host.mean(axis=(1, 2, 3), dtype=np.float64)[:, None, None], (n, h, w))
    fill_maps = fill_maps.astype(x_host.dtype)

    scores = forward_all_steps(model, x_host, np.stack(ranks), fill_maps, target_host, n_segments,
                               softmax=softmax, batch_size=batch_size)
    curves, score = [], np.empty(n)
    pad_to = int(n_segments.max()) if baseline == "quantus" else 0
    for i, s in enumerate(np.split(scores, np.cumsum(n_segments + 1)[:-1])):
        curves.append(s[1:] / s[0])
        score[i] = area_over_curve(curves[-1], pad_to)
    return IrofResult(score=score, normalised=score / n_segments, curves=curves, n_segments=n_segments)


def chunk_plan(n_segments: np.ndarray, batch_size: int) -> list[list[tuple[int, int, int]]]:
    """The forward batches: each a list of runs (sample, first step, count) of consecutive
    removal steps of one sample, at most ``batch_size`` inputs in all; steps 0..n_segments."""
    chunks, current, room = [], [], batch_size
    for sample, n in enumerate(n_segments.tolist()):
        step = 0
        while step <= n:
            count = min(room, n + 1 - step)
            current.append((sample, step, count))
            step, room = step + count, room - count
            if room == 0:
                chunks.append(current)
                current, room = [], batch_size
    return chunks + [current] if current else chunks


def forward_all_steps(model, x, ranks, fill_maps, target, n_segments, *, softmax, batch_size) -> np.ndarray:
    """Target scores of every (sample, k segments removed) input, k = 0..n_segments, flattened
    sample by sample. Each input is written once, straight into a reused batch buffer on the
    model's device, from its sample's image, rank map and fill map (broadcast, no gathers);
    the plan is host-side, so nothing waits for the device until the one copy at the end."""
    device = next(model.parameters()).device
    x_dev = torch.from_numpy(x).to(device)
    ranks_dev = torch.from_numpy(ranks.astype(np.int32)).to(device)
    fill_dev = torch.from_numpy(fill_maps).to(device)
    steps_dev = torch.arange(int(n_segments.max()) + 1, device=device, dtype=torch.int32)
    targets = torch.from_numpy(np.repeat(target, n_segments + 1)).to(device)
    out = torch.empty(len(targets), device=device, dtype=x_dev.dtype)
    buffer = torch.empty((min(batch_size, len(targets)), *x.shape[1:]), device=device, dtype=x_dev.dtype)
    start = 0
    with eval_mode(model), torch.inference_mode():
        for chunk in chunk_plan(n_segments, batch_size):
            filled = 0
            for sample, step, count in chunk:
                removed = (ranks_dev[sample] < steps_dev[step:step + count, None, None])[:, None]
                torch.where(removed, fill_dev[sample], x_dev[sample], out=buffer[filled:filled + count])
                filled += count
            logits = model(buffer[:filled])
            probs = torch.softmax(logits, dim=1) if softmax else logits
            out[start:start + filled] = probs.gather(1, targets[start:start + filled, None])[:, 0]
            start += filled
    return out.cpu().numpy()


def quantus_irof(model: torch.nn.Module, x: np.ndarray, attributions: np.ndarray, target: np.ndarray,
                 *, batch_size: int, softmax: bool = True) -> np.ndarray:
    """``quantus.IROF`` scores (the reference, for tests and benchmarks): SLIC, mean baseline,
    softmax, its mask-shape bug worked around by broadcasting the 1-channel segment mask over
    the input's channels. ``model`` must be in eval mode; x (N, C, H, W) numpy."""
    import quantus
    from quantus.functions.perturb_func import baseline_replacement_by_mask

    def replace_broadcast_mask(arr, mask, **kwargs):
        return baseline_replacement_by_mask(arr, np.broadcast_to(mask, arr.shape), **kwargs)

    metric = quantus.IROF(perturb_func=replace_broadcast_mask, return_aggregate=False, disable_warnings=True)
    device = str(next(model.parameters()).device)
    return np.asarray(metric(model=model, x_batch=x, y_batch=target, a_batch=attributions, channel_first=True,
                             softmax=softmax, device=device, batch_size=batch_size))
