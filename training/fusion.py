"""Late fusion of the two streams' video scores.

- ``mean``: the mean of the two streams' per-video softmax scores,
- ``svm_softmax``: a linear SVM on the concatenated softmax scores,
- ``svm_features``: a linear SVM on the concatenated penultimate features,

the SVMs fitted on the train split's videos (scored by the trained streams, as in the
original study) and applied to the test videos. Each train trial, and each pruning step,
saves its per-video scores with :func:`save_scores`; the fusion stage only reads them, and
fuses every step whose scores both streams saved.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from analysis.results import read_table, write_rows

from .config import STREAMS
from .evaluate import EvalResult, evaluate, summarise

METHODS = ("mean", "svm_softmax", "svm_features")


def uses_svm(methods) -> bool:
    """Whether any of the fusion methods fits an SVM (on the train videos' scores)."""
    return any(m.startswith("svm") for m in methods)


def wants_train_scores(cfg) -> bool:
    """Whether the models must also score the train clips: the ``fuse`` stage fits an SVM."""
    return "fuse" in cfg.stages and uses_svm(cfg.fusion.methods)


class FusionError(ValueError):
    """Stream scores that cannot be fused."""


@dataclasses.dataclass
class VideoScores:
    """One model's per-video mean softmax scores (and penultimate features) on one subset."""
    videos: list[str]
    labels: np.ndarray  # (V,)
    scores: np.ndarray  # (V, K)
    features: np.ndarray | None  # (V, D)

    @classmethod
    def of(cls, result: EvalResult) -> "VideoScores":
        return cls(result.videos, result.video_labels, result.video_scores, result.video_features)


def score_and_save(model, loader, num_classes: int, path: Path, *, amp: bool,
                   desc: str = "evaluate") -> EvalResult:
    """Evaluate (with penultimate features) and save the per-video scores the fuse stage reads."""
    result = evaluate(model, loader, num_classes, features=True, amp=amp, desc=desc)
    save_scores(path, VideoScores.of(result))
    return result


def save_scores(path: Path, scores: VideoScores) -> Path:
    """Write scores atomically (temporary name, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp.npz")
    arrays = dict(videos=np.asarray(scores.videos, dtype=str), labels=scores.labels, scores=scores.scores)
    if scores.features is not None:
        arrays["features"] = scores.features
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return path


def load_scores(path: Path) -> VideoScores:
    path = Path(path)
    if not path.is_file():
        raise FusionError(f"{path}: no scores; train that stream first (the `train` stage)")
    with np.load(path, allow_pickle=False) as data:
        return VideoScores([str(v) for v in data["videos"]], data["labels"], data["scores"],
                           data["features"] if "features" in data else None)


def _aligned(spatial: VideoScores, temporal: VideoScores, what: str) -> None:
    if spatial.videos != temporal.videos or not np.array_equal(spatial.labels, temporal.labels):
        diff = sorted(set(spatial.videos) ^ set(temporal.videos))
        raise FusionError(f"{what}: the streams scored different videos or labels (e.g. {diff[:3]})")


def fuse(spatial_test: VideoScores, temporal_test: VideoScores, spatial_train: VideoScores | None,
         temporal_train: VideoScores | None, methods=METHODS, *, svm_c: float = 1.0,
         seed: int = 0) -> dict[str, EvalResult]:
    """Video-level results of each fusion method on the test videos.

    Clip accuracy is not defined for fused video scores (NaN); the loss is the video-level
    negative log-likelihood for ``mean`` and NaN for the SVMs (they give no probabilities).
    """
    _aligned(spatial_test, temporal_test, "test")
    labels = spatial_test.labels
    results = {}
    for method in methods:
        if method == "mean":
            fused = (spatial_test.scores + temporal_test.scores) / 2
            loss = None
        elif method in ("svm_softmax", "svm_features"):
            if spatial_train is None or temporal_train is None:
                raise FusionError(f"{method} needs the train split's scores")
            _aligned(spatial_train, temporal_train, "train")
            key = "scores" if method == "svm_softmax" else "features"
            parts = [getattr(s, key) for s in (spatial_train, temporal_train, spatial_test, temporal_test)]
            if any(p is None for p in parts):
                raise FusionError(f"{method} needs penultimate features in every scores file")
            svm = make_pipeline(StandardScaler(), LinearSVC(C=svm_c, random_state=seed))
            svm.fit(np.hstack(parts[:2]), spatial_train.labels)
            fused = _decision_per_class(svm, np.hstack(parts[2:]), spatial_test.scores.shape[1])
            loss = math.nan
        else:
            raise FusionError(f"unknown fusion method {method!r}, expected one of {list(METHODS)}")
        result = summarise(fused if loss is None else _softmax(fused), labels, spatial_test.videos)
        results[method] = dataclasses.replace(result, clip_accuracy=math.nan,
                                              loss=result.loss if loss is None else loss)
    return results


def _decision_per_class(svm, x: np.ndarray, num_classes: int) -> np.ndarray:
    """SVM decision values as (V, num_classes), -inf for classes absent from the SVM's train set."""
    decision = svm.decision_function(x)
    classes = svm.classes_
    if decision.ndim == 1:  # two classes: one column, positive = classes[1]
        decision = np.stack([-decision, decision], axis=1)
    out = np.full((len(x), num_classes), -np.inf)
    out[:, classes] = decision
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    """Rank-preserving map of decision values to the simplex (for top-k; not a probability)."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def run_fusion_stage(cfg, ctx) -> None:
    """Fuse both streams of every run at every step (0 = unpruned) whose test scores both
    streams saved (the pruning steps too when ``fuse`` comes after ``prune`` in the stages);
    rows go to ``accuracy``, a pruned step's with the streams' prune ratio and the mean of
    their removed channel, parameter and FLOP fractions."""
    paths = cfg.paths
    needs_train = uses_svm(cfg.fusion.methods)
    stream_rows = None  # the streams' accuracy rows, read once if a pruned step is fused
    for run in range(1, cfg.train.runs + 1):
        steps = [k for k in range(cfg.prune.steps + 1)
                 if all(paths.scores(s, run, k, "test").is_file() for s in STREAMS)]
        if not steps:
            raise FusionError(f"run {run}: no step with test scores of both streams under "
                              f"{paths.root / 'scores'}; run the `train` stage first")
        for step in steps:
            test = [load_scores(paths.scores(s, run, step, "test")) for s in STREAMS]
            train = [load_scores(paths.scores(s, run, step, "train")) for s in STREAMS] \
                if needs_train else [None, None]
            results = fuse(*test, *train, cfg.fusion.methods, svm_c=cfg.fusion.svm_c,
                           seed=cfg.run_seed(run))
            if step and stream_rows is None:
                stream_rows = read_table(paths.results, "accuracy").filter(pl.col("stream").is_in(STREAMS))
            pruning = _pruning_fields(stream_rows, run, step) if step else {}
            rows = [r.accuracy_row(experiment=cfg.experiment.name, stream="fusion", fusion=method, run=run,
                                   seed=cfg.run_seed(run), split=cfg.data.split, step=step,
                                   residual=cfg.prune.residual, **pruning)
                    for method, r in results.items()]
            write_rows(paths.results, "accuracy", rows, partition=f"fusion/run{run}/step{step}")
            print(f"fusion run {run} step {step}: " + ", ".join(f"{m} {r.video_accuracy:.1f} %"
                                                                for m, r in results.items()))


def _pruning_fields(stream_rows: pl.DataFrame, run: int, step: int) -> dict:
    """The two streams' prune ratio (equal by the schedule) and mean removed fractions at a step."""
    fields = ("prune_ratio", "channels_removed", "params_removed", "flops_removed")
    rows = stream_rows.filter((pl.col("run") == run) & (pl.col("step") == step))
    if rows.height != len(STREAMS):
        raise FusionError(f"accuracy rows of run {run} step {step}: expected one per stream, found {rows.height}")
    return {f: float(rows[f].mean()) for f in fields}
