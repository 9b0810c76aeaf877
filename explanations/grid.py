"""The explanation grid of the explain stage (issue 30): every method of ``explain.methods``
(``explanations.methods``) scored by every metric of ``explain.metrics`` (``explanations.metrics``),
for one checkpoint's batch of clips, as rows of the ``faithfulness`` table.

The study's pair (vanilla gradient, IROF) is what the explain stage computes anyway: its maps,
target and IROF scores (with the seeded random segment order, ``irof_random``) are reused, not
recomputed. Every method explains the same class per clip (the vanilla pass resolves
``explain.target``). The random-order control of a metric does not depend on the method, so it
is computed once per batch and metric: IROF's is the stage's ``irof_random``; the others score
``explanations.metrics.random_maps`` (seeded by experiment seed, video and clip). The randomisation
check runs on the first ``explain.randomisation_clips`` chosen clips only (in the order of the
clip choice) and has no random control.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import polars as pl
import torch

from explanations.methods import MethodSettings, explain
from explanations.metrics import WITHOUT_RANDOM_CONTROL, MetricSettings, random_maps, score
from core.results import read_table
from core.config import ExperimentConfig

TABLE = "faithfulness"
STUDY_METHOD, STUDY_METRIC = "vanilla_gradient", "irof"


def method_settings(cfg: ExperimentConfig) -> MethodSettings:
    ex = cfg.explain
    return MethodSettings(reduce=ex.reduce, ig_steps=ex.ig_steps, smoothgrad_sigma=ex.smoothgrad_sigma,
                          smoothgrad_samples=ex.smoothgrad_samples, seed=cfg.experiment.seed)


def metric_settings(cfg: ExperimentConfig) -> MetricSettings:
    ex = cfg.explain
    return MetricSettings(irof_baseline=ex.baseline, deletion_steps=ex.deletion_steps,
                          seed=cfg.experiment.seed, forward_batch=ex.forward_batch)


def randomisation_subset(cfg: ExperimentConfig, wanted: dict[str, list[int]]) -> set[tuple[str, int]]:
    """The clips the randomisation check runs on: the first ``explain.randomisation_clips``."""
    if "randomisation" not in cfg.explain.metrics:
        return set()
    clips = [(video, clip) for video, chosen in wanted.items() for clip in chosen]
    return set(clips[:cfg.explain.randomisation_clips])


@dataclass
class StudyPair:
    """What the explain stage computed for a batch: vanilla-gradient maps (N, H, W), the target
    (N,), IROF and its random-order control (N,), the SLIC segments (N, H, W)."""
    maps: torch.Tensor
    target: torch.Tensor
    irof: np.ndarray
    irof_random: np.ndarray
    segments: np.ndarray


def _finite(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)


def grid_scores(cfg: ExperimentConfig, model: torch.nn.Module, x: torch.Tensor, clips: list[tuple[str, int]],
                study: StudyPair, randomised: set[tuple[str, int]]) -> list[list[dict]]:
    """Per clip of the batch, its rows' grid columns: method, reduce, metric, score,
    score_random, seconds (the clip's share of the metric's time, its control included)."""
    ex, msettings, settings = cfg.explain, method_settings(cfg), metric_settings(cfg)
    n = len(clips)
    rows: list[list[dict]] = [[] for _ in range(n)]
    controls: dict[str, np.ndarray] = {"irof": study.irof_random}
    chance = None
    for method in ex.methods:
        if method == STUDY_METHOD:
            maps = study.maps
        else:
            maps = explain(method, model, x, study.target, msettings).maps

        def explain_fn(m, xx, t, method=method) -> torch.Tensor:
            return explain(method, m, xx, t, msettings).maps

        for metric in ex.metrics:
            start = time.perf_counter()
            if metric == "randomisation":
                keep = [i for i, c in enumerate(clips) if c in randomised]
                if not keep:
                    continue
                values = np.full(n, np.nan)
                values[keep] = score(metric, model, x[keep], maps[keep], study.target[keep], settings,
                                     explain=explain_fn)
                seconds = (time.perf_counter() - start) / len(keep)
                for i in keep:
                    rows[i].append(_row(method, ex.reduce, metric, values[i], None, seconds))
                continue
            if method == STUDY_METHOD and metric == STUDY_METRIC:
                values = study.irof
            else:
                values = score(metric, model, x, maps, study.target, settings, segments=study.segments)
            if metric not in controls and metric not in WITHOUT_RANDOM_CONTROL:
                chance = random_maps(clips, tuple(x.shape[2:]), cfg.experiment.seed) if chance is None else chance
                controls[metric] = score(metric, model, x, chance, study.target, settings, segments=study.segments)
            seconds = (time.perf_counter() - start) / n
            for i in range(n):
                rows[i].append(_row(method, ex.reduce, metric, values[i], controls[metric][i], seconds))
    return rows


def _row(method: str, reduce: str, metric: str, value, control, seconds: float) -> dict:
    return dict(method=method, reduce=None if method == "grad_cam" else reduce, metric=metric,
                score=_finite(value), score_random=None if control is None else _finite(control), seconds=seconds)


def read_faithfulness(results_dir, *, scan: Callable = read_table) -> pl.DataFrame:
    """The ``faithfulness`` table, plus the rows of older ``irof``-table files (written before
    issue 30) as ``method: vanilla_gradient, metric: irof`` where no faithfulness row has their
    key: an older run reads as the study's pair without being explained again."""
    grid = scan(results_dir, TABLE)
    old = scan(results_dir, "irof")
    if old.is_empty():
        return grid
    keys = ["experiment", "stream", "chain", "run", "step", "video", "clip"]
    mapped = old.select(
        *keys, "prune_ratio", pl.lit(STUDY_METHOD).alias("method"),
        pl.col("method").str.strip_prefix(f"{STUDY_METHOD}_").alias("reduce"), pl.lit(STUDY_METRIC).alias("metric"),
        pl.col("irof").alias("score"), pl.col("irof_random").alias("score_random"), "label", "target", "predicted",
        "correct", "target_rule", "seconds", "explain_hash", "checkpoint_sha256",
        *(c for c in grid.columns if c not in keys and c in old.columns and c in (
            "config_hash", "git_commit", "written_at", "host", "node_id")))
    have = grid.filter((pl.col("method") == STUDY_METHOD) & (pl.col("metric") == STUDY_METRIC)).select(keys)
    missing = mapped.join(have, on=keys, how="anti", nulls_equal=True)
    return pl.concat([grid, missing.select(grid.columns).cast(grid.schema)], how="vertical")
