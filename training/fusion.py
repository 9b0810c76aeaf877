"""Late fusion of the two streams' video scores.

- ``mean``: the mean of the two streams' per-video softmax scores,
- ``svm_softmax``: a linear SVM on the concatenated softmax scores,
- ``svm_features``: a linear SVM on the concatenated penultimate features,
- ``svm_logits``: a linear SVM on the concatenated per-video mean logits,

each SVM's inputs standardised (``StandardScaler``) and its ``C`` chosen by cross-validation
from ``fusion.svm_c`` (a list) on the videos it is fitted on: scikit-learn's LinearSVC problem,
solved for all classes and candidate C at once by :mod:`training.svm`. The SVMs are fitted on the
held-out (validation) part of the train list, videos the networks never trained on
(``fusion.fit_on: heldout``), not on the training videos whose scores the networks overfit
(``fit_on: train`` keeps the original study's choice), and applied to the test videos. Each train trial, and each pruning step,
saves its per-video scores with :func:`save_scores`; the fusion stage only reads them, and
fuses every step whose scores both streams saved.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import polars as pl
import ray

from core.atomic import atomic_file
from core.results import model_partition, read_table, table_path, write_rows
from core.progress import progress

from core.config import FUSIONS, STREAMS, STUDY_CHAIN
from training.evaluate import EvalResult, evaluate, summarise
from training.svm import fit_svm

SVM_INPUTS = {"svm_softmax": "scores", "svm_features": "features", "svm_logits": "logits"}


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
    """One model's per-video mean softmax scores (and penultimate features, logits) on one subset."""
    videos: list[str]
    labels: np.ndarray  # (V,)
    scores: np.ndarray  # (V, K)
    features: np.ndarray | None  # (V, D)
    logits: np.ndarray | None = None  # (V, K)

    @classmethod
    def of(cls, result: EvalResult) -> "VideoScores":
        return cls(result.videos, result.video_labels, result.video_scores, result.video_features,
                   result.video_logits)

    def only(self, videos: set[str]) -> "VideoScores":
        """The rows of ``videos`` (in this object's order)."""
        rows = [i for i, v in enumerate(self.videos) if v in videos]
        pick = lambda a: None if a is None else a[rows]  # noqa: E731
        return VideoScores([self.videos[i] for i in rows], self.labels[rows], self.scores[rows],
                           pick(self.features), pick(self.logits))


def score_and_save(model, loader, num_classes: int, path: Path, *, amp: bool,
                   desc: str = "evaluate") -> EvalResult:
    """Evaluate (with penultimate features) and save the per-video scores the fuse stage reads."""
    result = evaluate(model, loader, num_classes, features=True, amp=amp, desc=desc)
    save_scores(path, VideoScores.of(result))
    return result


def save_scores(path: Path, scores: VideoScores) -> Path:
    """Write scores atomically (a unique temporary name, then rename)."""
    path = Path(path)
    arrays = dict(videos=np.asarray(scores.videos, dtype=str), labels=scores.labels, scores=scores.scores)
    if scores.features is not None:
        arrays["features"] = scores.features
    if scores.logits is not None:
        arrays["logits"] = scores.logits
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return path


def load_scores(path: Path) -> VideoScores:
    path = Path(path)
    if not path.is_file():
        raise FusionError(f"{path}: no scores; train that stream first (the `train` stage)")
    with np.load(path, allow_pickle=False) as data:
        return VideoScores([str(v) for v in data["videos"]], data["labels"], data["scores"],
                           data["features"] if "features" in data else None,
                           data["logits"] if "logits" in data else None)


def _aligned(spatial: VideoScores, temporal: VideoScores, what: str) -> None:
    if spatial.videos != temporal.videos or not np.array_equal(spatial.labels, temporal.labels):
        diff = sorted(set(spatial.videos) ^ set(temporal.videos))
        raise FusionError(f"{what}: the streams scored different videos or labels (e.g. {diff[:3]})")


def fuse(spatial_test: VideoScores, temporal_test: VideoScores, spatial_train: VideoScores | None,
         temporal_train: VideoScores | None, methods=FUSIONS, *, svm_c=1.0, seed: int = 0,
         fit_videos: set[str] | None = None, cv_folds: int = 3,
         chosen_c: dict | None = None) -> dict[str, EvalResult]:
    """Video-level results of each fusion method on the test videos.

    The SVMs are fitted on the ``*_train`` rows of ``fit_videos`` (all rows when None), with
    ``C`` from ``svm_c`` (one value, or a list searched by ``cv_folds``-fold cross-validation
    on those rows); ``chosen_c``, when given, receives each SVM method's ``C``.
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
        elif method in SVM_INPUTS:
            if spatial_train is None or temporal_train is None:
                raise FusionError(f"{method} needs the train split's scores")
            _aligned(spatial_train, temporal_train, "train")
            fit = [s if fit_videos is None else s.only(fit_videos) for s in (spatial_train, temporal_train)]
            if len(fit[0].videos) < 2 or len(np.unique(fit[0].labels)) < 2:
                raise FusionError(f"{method}: {len(fit[0].videos)} videos of {len(np.unique(fit[0].labels))} "
                                  f"classes to fit the SVM on; needs at least two classes (more held-out "
                                  f"videos: raise train.val_fraction, or fusion.fit_on: train)")
            key = SVM_INPUTS[method]
            parts = [getattr(s, key) for s in (*fit, spatial_test, temporal_test)]
            if any(p is None for p in parts):
                raise FusionError(f"{method} needs {key} in every scores file (rescore with this version)")
            svm, c = fit_svm(np.hstack(parts[:2]), fit[0].labels, svm_c, cv_folds, seed)
            if chosen_c is not None:
                chosen_c[method] = c
            fused = _decision_per_class(svm, np.hstack(parts[2:]), spatial_test.scores.shape[1])
            loss = math.nan
        else:
            raise FusionError(f"unknown fusion method {method!r}, expected one of {list(FUSIONS)}")
        result = summarise(fused if loss is None else _softmax(fused), labels, spatial_test.videos)
        # an SVM gives margins, not probabilities: neither a loss nor a calibration error
        results[method] = dataclasses.replace(result, clip_accuracy=math.nan,
                                              loss=result.loss if loss is None else loss,
                                              ece=result.ece if loss is None else None)
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
    their removed channel, parameter and FLOP fractions.

    Each (run, step) is one Ray task of one CPU when Ray is running, else the pairs are fused
    here one after another (the SVMs' cross-validated fits take well under a second a pair at
    the paper-shape sizes since issue 26, ~25 s with scikit-learn's LinearSVC before)."""
    paths = cfg.paths
    pairs = []
    for run in range(1, cfg.train.runs + 1):
        steps = [k for k in range(cfg.prune.steps + 1)
                 if all(paths.scores(s, run, k, "test").is_file() for s in STREAMS)]
        if not steps:
            raise FusionError(f"run {run}: no step with test scores of both streams under "
                              f"{paths.root / 'scores'}; run the `train` stage first")
        pairs += [(run, step, STUDY_CHAIN) for step in steps]
        # the control chains' tested steps (step 0 is the study's, shared)
        pairs += [(run, step, chain) for chain in cfg.prune.chains if chain != STUDY_CHAIN
                  for step in range(1, cfg.prune.steps + 1)
                  if all(paths.scores(s, run, step, "test", chain).is_file() for s in STREAMS)]
    if not ray.is_initialized():
        for run, step, chain in pairs:
            print(fuse_pair(cfg, run, step, chain))
        return
    remote = ray.remote(fuse_pair_task).options(num_cpus=1, num_gpus=0, max_retries=cfg.ray.max_failures)
    pending = {remote.remote(cfg.to_dict(), *pair): pair for pair in pairs}
    failed = []
    with progress(total=len(pending), desc="fuse (run, step)") as bar:
        while pending:
            (ready,), _ = ray.wait(list(pending), num_returns=1)
            run, step, chain = pending.pop(ready)
            try:
                print(ray.get(ready), flush=True)
            except Exception as exc:  # keep the other pairs' rows; report every failure at the end
                failed.append(f"run {run} step {step} {chain}: {exc}")
            bar.update()
    if failed:
        raise FusionError(f"fuse: {len(failed)} of {len(pairs)} (run, step) pairs failed: " + "; ".join(failed))


def fuse_pair_task(config: dict, run: int, step: int, chain: str = STUDY_CHAIN) -> str:
    """:func:`fuse_pair` as a Ray task (the config travels as a plain dict)."""
    from core.threads import pin_threads

    from core.config import ExperimentConfig
    pin_threads(1)  # the task's one CPU: numpy/BLAS under the SVM fits
    return fuse_pair(ExperimentConfig.from_dict(config), run, step, chain)


def fuse_pair(cfg, run: int, step: int, chain: str = STUDY_CHAIN) -> str:
    """Fuse run ``run`` at step ``step`` of ``chain`` unless its rows are there and current; a
    line saying what was done."""
    paths = cfg.paths
    what = f"fusion run {run} step {step}" + ("" if chain == STUDY_CHAIN else f" {chain}")
    if _fused_already(cfg, run, step, chain):
        return f"{what}: already fused, skipped"
    fit_videos = heldout_videos(cfg, run) if uses_svm(cfg.fusion.methods) else None
    test = [load_scores(paths.scores(s, run, step, "test", chain)) for s in STREAMS]
    train = [load_scores(paths.scores(s, run, step, "train", chain)) for s in STREAMS] \
        if uses_svm(cfg.fusion.methods) else [None, None]
    chosen_c = {}
    results = fuse(*test, *train, cfg.fusion.methods, svm_c=cfg.fusion.svm_c,
                   seed=cfg.run_seed(run), fit_videos=fit_videos, cv_folds=cfg.fusion.cv_folds,
                   chosen_c=chosen_c)
    pruning = {}
    if step:
        stream_rows = read_table(paths.results, "accuracy",  # the two streams' rows at this step only
                                 [model_partition(s, run, step, chain) for s in STREAMS])
        pruning = _pruning_fields(stream_rows, run, step)
    rows = [r.accuracy_row(experiment=cfg.experiment.name, stream="fusion", fusion=method, run=run,
                           seed=cfg.run_seed(run), split=cfg.data.split, step=step, chain=chain,
                           svm_c=chosen_c.get(method), residual=cfg.prune.residual, **pruning)
            for method, r in results.items()]
    write_rows(paths.results, "accuracy", rows, partition=model_partition("fusion", run, step, chain))
    return f"{what}: " + ", ".join(f"{m} {r.video_accuracy:.1f} %" for m, r in results.items())


def _fused_already(cfg, run: int, step: int, chain: str = STUDY_CHAIN) -> bool:
    """True when the fusion rows of (run, step, chain) hold every configured method and were
    written after the score files they fuse (a retrained stream's new scores are fused again)."""
    rows = table_path(cfg.paths.results, "accuracy", model_partition("fusion", run, step, chain))
    if not rows.is_file():
        return False
    scores = [cfg.paths.scores(s, run, step, subset, chain) for s in STREAMS for subset in ("test", "train")]
    newest = max(p.stat().st_mtime_ns for p in scores if p.is_file())
    methods = set(pl.read_parquet(rows, columns=["fusion"])["fusion"].to_list())
    return methods == set(cfg.fusion.methods) and rows.stat().st_mtime_ns >= newest


def heldout_videos(cfg, run: int) -> set[str] | None:
    """The videos the SVMs fit on: the run's validation videos (the streams of one run share
    them: both draw them with the run seed), or None (every train-list video) for ``fit_on: train``."""
    if cfg.fusion.fit_on == "train":
        return None
    if cfg.train.val_fraction <= 0:
        raise FusionError(f"fusion.fit_on: heldout needs held-out videos, but train.val_fraction is "
                          f"{cfg.train.val_fraction}; raise it or set fusion.fit_on: train")
    from training.data import stream_data  # imports DALI; only the fuse stage needs it

    return stream_data(cfg, cfg.run_seed(run)).val_videos


def _pruning_fields(stream_rows: pl.DataFrame, run: int, step: int) -> dict:
    """The two streams' prune ratio (equal by the schedule) and mean removed fractions at a step."""
    fields = ("prune_ratio", "channels_removed", "params_removed", "flops_removed")
    rows = stream_rows.filter((pl.col("run") == run) & (pl.col("step") == step))
    if rows.height != len(STREAMS):
        raise FusionError(f"accuracy rows of run {run} step {step}: expected one per stream, found {rows.height}")
    return {f: float(rows[f].mean()) for f in fields}
