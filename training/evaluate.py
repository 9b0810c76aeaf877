"""Clip- and video-level evaluation: a video's score is the mean softmax over its clips."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable

import numpy as np
import torch
from torch import nn

from core.progress import progress

from training.models import unwrap


@dataclass
class EvalResult:
    clip_accuracy: float  # percent
    video_accuracy: float  # percent, argmax of the mean softmax over each video's clips
    video_top5: float  # percent
    loss: float  # mean per-clip negative log-likelihood
    per_class: np.ndarray  # (K,) video accuracy per class in percent, nan where a class has no video
    videos: list[str]  # sorted video ids
    video_labels: np.ndarray  # (V,) int
    video_scores: np.ndarray  # (V, K) mean softmax per video
    video_features: np.ndarray | None  # (V, D) mean penultimate features per video, if asked
    n_clips: int
    video_logits: np.ndarray | None = None  # (V, K) mean logits per video, if asked (fusion input)
    ece: float | None = None  # expected calibration error of the video predictions, 0-1


    @property
    def n_videos(self) -> int:
        return len(self.videos)

    def accuracy_row(self, **keys) -> dict:
        """A row of the ``accuracy`` table; ``keys`` gives experiment, stream, run, seed, split...

        Pruning fields default to the unpruned model (step 0, nothing removed).
        """
        row = dict(fusion=None, step=0, prune_ratio=0.0, channels_removed=0.0, params_removed=0.0,
                   flops_removed=0.0, checkpoint=None, clip_accuracy=self.clip_accuracy,
                   video_accuracy=self.video_accuracy, video_top5=self.video_top5, loss=self.loss,
                   n_videos=self.n_videos, ece=self.ece, finished_at=datetime.now(timezone.utc))
        row.update(keys)
        return row


ECE_BINS = 15  # equal-width confidence bins (Guo et al. 2017, "On Calibration of Modern Neural Networks")


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Σ_b |B_b|/N · |accuracy(B_b) − mean confidence(B_b)| over equal-width bins of the top-class
    probability (a confidence of exactly 1 falls in the last bin): 0 = calibrated, 0-1.
    Issue 27: a pruned model that grows over- or under-confident changes IROF's p(x_k)/p(x)
    without its explanations changing, so the accuracy rows carry it as a possible confound."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    correct = (predicted == labels).astype(np.float64)
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    total = np.bincount(which, minlength=bins)
    gap = np.abs(np.bincount(which, weights=correct, minlength=bins) - np.bincount(which, weights=confidence,
                                                                                   minlength=bins))
    return float(gap.sum() / len(labels)) if total.sum() else float("nan")


def summarise(clip_probs: np.ndarray, clip_labels: np.ndarray, clip_videos: list[str],
              clip_features: np.ndarray | None = None, clip_logits: np.ndarray | None = None) -> EvalResult:
    """Clip and video metrics from per-clip softmax scores (N, K), labels (N,) and video ids."""
    clip_probs = np.asarray(clip_probs, dtype=np.float64)
    clip_labels = np.asarray(clip_labels, dtype=np.int64)
    n, k = clip_probs.shape
    if n == 0:
        raise ValueError("nothing to evaluate: the loader gave no clips")
    videos, inverse = np.unique(np.asarray(clip_videos), return_inverse=True)
    counts = np.bincount(inverse)
    scores = np.zeros((len(videos), k))
    np.add.at(scores, inverse, clip_probs)
    scores /= counts[:, None]
    labels = np.full(len(videos), -1)
    labels[inverse] = clip_labels
    mixed = np.flatnonzero(labels[inverse] != clip_labels)
    if mixed.size:
        raise ValueError(f"video {str(videos[inverse[mixed[0]]])!r} has clips with different labels")
    def per_video(clip_values: np.ndarray | None) -> np.ndarray | None:
        if clip_values is None:
            return None
        out = np.zeros((len(videos), clip_values.shape[1]))
        np.add.at(out, inverse, clip_values)
        return out / counts[:, None]

    features, logits = per_video(clip_features), per_video(clip_logits)

    correct = scores.argmax(1) == labels
    top5 = np.argsort(-scores, axis=1)[:, :5]
    per_class = np.full(k, np.nan)
    for c in np.unique(labels):
        per_class[c] = 100.0 * correct[labels == c].mean()
    nll = -np.log(np.clip(clip_probs[np.arange(n), clip_labels], 1e-12, None))
    return EvalResult(
        clip_accuracy=100.0 * float((clip_probs.argmax(1) == clip_labels).mean()),
        video_accuracy=100.0 * float(correct.mean()),
        video_top5=100.0 * float((top5 == labels[:, None]).any(1).mean()),
        loss=float(nll.mean()), per_class=per_class, videos=[str(v) for v in videos],
        video_labels=labels, video_scores=scores, video_features=features, n_clips=n,
        video_logits=logits, ece=expected_calibration_error(scores, labels))


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable[dict], num_classes: int, *, features: bool = False,
             device: str | torch.device | None = "auto", amp: bool = True,
             desc: str = "evaluate") -> EvalResult:
    """Evaluate on every batch of ``loader`` (``{"x", "label", "video", ...}``).

    A ten-crop batch (x of shape (N, 10, C, H, W)) is scored by the mean softmax over crops.
    ``features=True`` also averages the penultimate features (the input of ``fc``) and the
    logits per video.
    """
    device = resolve_device(device)
    model.eval()
    captured = []
    hook = unwrap(model).fc.register_forward_hook(lambda m, inp, out: captured.append(inp[0])) \
        if features else None
    probs, labels, videos, feats, clip_logits = [], [], [], [], []
    try:
        for batch in progress(loader, desc=desc, leave=False):
            x = batch["x"].to(device=device, dtype=torch.float32, non_blocking=True)
            crops = x.shape[1] if x.ndim == 5 else 1
            x = x.flatten(0, 1) if x.ndim == 5 else x
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
                logits = model(x)
            p = logits.float().softmax(1).unflatten(0, (-1, crops)).mean(1)
            probs.append(p.cpu())
            labels.append(torch.as_tensor(batch["label"]).cpu())
            videos.extend(batch["video"])
            if features:
                clip_logits.append(logits.float().unflatten(0, (-1, crops)).mean(1).cpu())
                feats.append(captured.pop().float().unflatten(0, (-1, crops)).mean(1).cpu())
    finally:
        if hook is not None:
            hook.remove()
    if not probs:
        raise ValueError("nothing to evaluate: the loader gave no batches")
    result = summarise(torch.cat(probs).numpy(), torch.cat(labels).numpy(), videos,
                       torch.cat(feats).numpy() if features else None,
                       torch.cat(clip_logits).numpy() if features else None)
    if result.video_scores.shape[1] != num_classes:
        raise ValueError(f"model scores {result.video_scores.shape[1]} classes, expected {num_classes}")
    return result
