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
never padded) run as forward batches; the scores stay on the device until one copy at the end
(except while the batch size is being calibrated, see :class:`BatchCalibration`).

Forward batch (``batch_size="auto"``, the default): the number of inputs per forward pass is
chosen by timing, on the first real inputs of a (model, input shape, device), powers of two
from 8 up (``AUTO_CANDIDATES``; each twice, its best time per input counts) until one is clearly
slower than the best so far, then the best is kept for the rest of the process. Why: the best
batch depends on the input size, the model and the device, and no fixed value suits them all.
Measured on the 2-core development CPU (ResNet-18, 2 threads): at 3x64x64 batches of 128-256
were fastest, but at 3x160x160 and 20x112x112 a batch of 256 (hundreds of MB of activations
per layer) made IROF 0.65x and 1.25x Quantus' speed, which forwards its 4 samples at a time;
see docs/benchmarks.md, "IROF", for time per input against batch size. Calibrating inputs are real
work (their scores are kept), so calibration only costs the time of the slower batches tried.
Logits of one input are bit-identical at any batch that is a multiple of 8 on that CPU
(oneDNN), and on a CPU every batch is padded to one, so the choice (and any fixed batch size)
leaves the scores bit-identical there; on a GPU they may differ in float rounding.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from skimage.segmentation import slic

from explanations.saliency import eval_mode

BASELINES = ("per_image_mean", "quantus")
AUTO = "auto"
# forward batches tried by the calibration: powers of two (multiples of 8, see the module doc),
# up to 256 on a CPU (the old fixed default, past the best on every size measured) and 1024 on
# a GPU; never more than the inputs of the call that starts the calibration.
AUTO_CANDIDATES = {"cpu": (8, 16, 32, 64, 128, 256), "cuda": (8, 16, 32, 64, 128, 256, 512, 1024)}
CPU_BATCH_MULTIPLE = 8  # see forward_all_steps
AUTO_TIMINGS = 2  # chunks timed per candidate; the first also absorbs one-off costs of a new shape
AUTO_STOP = 1.10  # a candidate this much slower per input than the best so far ends the search


@dataclass
class IrofResult:
    score: np.ndarray  # (N,) area over the curve, Quantus-compatible
    normalised: np.ndarray  # (N,) score / n_segments
    curves: list[np.ndarray]  # per sample (n_segments,): ratio after removing 1..n segments
    n_segments: np.ndarray  # (N,) int


def check_batch_size(batch_size) -> None:
    """``batch_size`` must be ``"auto"`` or a positive int (inputs per forward pass)."""
    if batch_size == AUTO and isinstance(batch_size, str):
        return
    if isinstance(batch_size, (int, np.integer)) and not isinstance(batch_size, bool) and batch_size >= 1:
        return
    raise ValueError(f"batch_size must be {AUTO!r} or a positive int (inputs per forward pass), got {batch_size!r}")


class BatchCalibration:
    """The forward batch of one (model, input shape, device): a search over ``candidates`` on the
    real chunks IROF runs (see the module doc), finished with ``choice`` set. It may span calls:
    a call with fewer inputs than the search needs leaves it to the next one."""

    def __init__(self, candidates: tuple[int, ...]):
        self.candidates = tuple(candidates)
        self.times: dict[int, list[float]] = {}  # batch -> seconds per input, one per timed chunk
        self.choice: int | None = None

    def per_input(self, batch: int) -> float:
        return min(self.times[batch])

    def next_batch(self) -> int:
        """The batch to run next: the chosen one, or the candidate still being timed."""
        if self.choice is not None:
            return self.choice
        for batch in self.candidates:
            if len(self.times.get(batch, ())) < AUTO_TIMINGS:
                return batch
        raise AssertionError("calibration finished without a choice")

    def record(self, batch: int, count: int, seconds: float) -> bool:
        """A chunk of ``count`` inputs planned at ``batch`` took ``seconds``; whether it counted
        (a last partial chunk does not: its time per input would not be that batch's)."""
        if self.choice is not None or count != batch:
            return False
        self.times.setdefault(batch, []).append(seconds / count)
        if len(self.times[batch]) < AUTO_TIMINGS:
            return True
        best = min(self.times, key=self.per_input)
        done = [b for b in self.candidates if len(self.times.get(b, ())) >= AUTO_TIMINGS]
        if self.per_input(batch) > AUTO_STOP * self.per_input(best) or len(done) == len(self.candidates):
            self.choice = best
        return True

    def settle(self) -> None:
        """End the search now: the best batch timed so far, else the one being tried."""
        if self.choice is None:
            self.choice = min(self.times, key=self.per_input) if self.times else self.next_batch()


_CALIBRATIONS: dict[tuple, BatchCalibration] = {}


def calibration_key(model: torch.nn.Module, shape: tuple, dtype, device: torch.device) -> tuple:
    """What the best batch depends on: the model's architecture (its class and every parameter's
    shape, so a pruned model is another key), one input's shape and dtype, the device and the
    CPU threads."""
    params = tuple(tuple(p.shape) for p in model.parameters())
    return (type(model).__qualname__, params, tuple(shape), str(dtype), str(device), torch.get_num_threads())


def calibration_for(model: torch.nn.Module, shape: tuple, dtype, device: torch.device, work: int) -> BatchCalibration:
    """The process-wide calibration of this key, made on first use with the candidates for
    ``device`` up to the smallest power of two >= ``work`` (the inputs of this first call)."""
    key = calibration_key(model, shape, dtype, device)
    if key not in _CALIBRATIONS:
        candidates = AUTO_CANDIDATES["cuda" if device.type == "cuda" else "cpu"]
        kept = tuple(b for b in candidates if b < work)
        kept += tuple(b for b in candidates if b >= work)[:1]
        _CALIBRATIONS[key] = BatchCalibration(kept or candidates[:1])
    return _CALIBRATIONS[key]


def auto_batch_sizes() -> dict[tuple, int | None]:
    """Every calibration of this process: key -> chosen batch (None while still searching)."""
    return {key: cal.choice for key, cal in _CALIBRATIONS.items()}


def clear_auto_batch_sizes() -> None:
    _CALIBRATIONS.clear()


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


def random_ranks(segments: np.ndarray, seed: int) -> tuple[np.ndarray, int]:
    """For one sample: a rank map like ``removal_ranks`` but with the segments in a uniformly
    random order (a permutation from ``numpy.random.default_rng(seed)``): IROF's chance level
    for these segments (issue 27's ``irof_random``)."""
    ids, labels = np.unique(segments, return_inverse=True)
    order = np.random.default_rng(seed).permutation(len(ids))
    return order[labels.reshape(segments.shape)], len(ids)


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
         baseline: str = "per_image_mean", softmax: bool = True, batch_size: int | str = AUTO,
         random_seeds=None) -> IrofResult:
    """IROF of each sample of ``x`` (N, C, H, W; float32, or float64 for a float64 model) for
    its class ``target`` (N,), given ``attributions`` (N, H, W) or (N, C|1, H, W) and optional
    precomputed ``segments`` (N, H, W) integer labels (default: SLIC as Quantus computes it).
    ``batch_size`` is the number of inputs per forward pass, or ``"auto"`` (calibrated once
    per model, input shape and device in this process; see the module doc). With
    ``random_seeds`` (one int per sample) the segments go in a seeded random order instead of by
    attribution (``random_ranks``; ``attributions`` are then unused): pass the same ``segments``
    to score an explanation against chance on equal terms."""
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    check_batch_size(batch_size)
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
    if random_seeds is not None and len(random_seeds) != n:
        raise ValueError(f"{len(random_seeds)} random seeds for {n} inputs")
    for i in range(n):
        rank, n_segments[i] = removal_ranks(segments[i], attribution[i]) if random_seeds is None \
            else random_ranks(segments[i], int(random_seeds[i]))
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


def chunks(n_segments: np.ndarray, next_size) -> Iterator[list[tuple[int, int, int]]]:
    """The forward batches, lazily: each a list of runs (sample, first step, count) of consecutive
    removal steps of one sample, at most ``next_size()`` inputs in all (asked afresh for every
    batch); steps 0..n_segments."""
    current, room = [], next_size()
    for sample, n in enumerate(n_segments.tolist()):
        step = 0
        while step <= n:
            count = min(room, n + 1 - step)
            current.append((sample, step, count))
            step, room = step + count, room - count
            if room == 0:
                yield current
                current, room = [], next_size()
    if current:
        yield current


def forward_all_steps(model, x, ranks, fill_maps, target, n_segments, *, softmax, batch_size) -> np.ndarray:
    """Target scores of every (sample, k segments removed) input, k = 0..n_segments, flattened
    sample by sample. Each input is written once, straight into a reused batch buffer on the
    model's device, from its sample's image, rank map and fill map (broadcast, no gathers);
    the plan is host-side, so nothing waits for the device until the one copy at the end, except
    while ``batch_size="auto"`` is calibrating (each timed batch is synchronised)."""
    device = next(model.parameters()).device
    work = int((n_segments + 1).sum())
    calibration = None
    if batch_size == AUTO:
        found = calibration_for(model, x.shape[1:], x.dtype, device, work)
        batch_size, calibration = found.choice, (found if found.choice is None else None)
    x_dev = torch.from_numpy(x).to(device)
    ranks_dev = torch.from_numpy(ranks.astype(np.int32)).to(device)
    fill_dev = torch.from_numpy(fill_maps).to(device)
    steps_dev = torch.arange(int(n_segments.max()) + 1, device=device, dtype=torch.int32)
    targets = torch.from_numpy(np.repeat(target, n_segments + 1)).to(device)
    out = torch.empty(len(targets), device=device, dtype=x_dev.dtype)
    largest = max(calibration.candidates) if calibration is not None else batch_size
    # On a CPU every forward batch is padded to a multiple of CPU_BATCH_MULTIPLE (with copies of
    # its last input, outputs dropped): oneDNN then gives each input bit-identical logits
    # whatever the batch (measured: ResNet-18/50, 3 and 20 channels, 32-112 px, batches 8-48 and
    # a padded partial batch all equal; batches of 1 or 3 differ in the last bits), so scores do
    # not depend on the batch size or on the calibration's timing. At most 7 extra inputs a call.
    multiple = CPU_BATCH_MULTIPLE if device.type == "cpu" else 1
    rows = -(-min(largest, work) // multiple) * multiple
    buffer = torch.empty((rows, *x.shape[1:]), device=device, dtype=x_dev.dtype)
    next_size = calibration.next_batch if calibration is not None else (lambda: batch_size)
    start = timed = 0
    with eval_mode(model), torch.inference_mode():
        for chunk in chunks(n_segments, next_size):
            if calibration is not None:
                size = calibration.next_batch()  # the size this chunk was planned with
                _synchronize(device)
                began = time.perf_counter()
            filled = 0
            for sample, step, count in chunk:
                removed = (ranks_dev[sample] < steps_dev[step:step + count, None, None])[:, None]
                torch.where(removed, fill_dev[sample], x_dev[sample], out=buffer[filled:filled + count])
                filled += count
            padded = min(-(-filled // multiple) * multiple, len(buffer))
            if padded > filled:
                buffer[filled:padded] = buffer[filled - 1]
            logits = model(buffer[:padded])[:filled]
            probs = torch.softmax(logits, dim=1) if softmax else logits
            out[start:start + filled] = probs.gather(1, targets[start:start + filled, None])[:, 0]
            start += filled
            if calibration is not None:
                _synchronize(device)
                timed += calibration.record(size, filled, time.perf_counter() - began)
    if calibration is not None and not timed:
        calibration.settle()  # calls too small to time a whole candidate batch: no progress is possible
    return out.cpu().numpy()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
