"""Faithfulness metrics of the grid (``explain.metrics``), each with its random-order control.

- ``irof``: IROF (``explanations.irof``, equal to Quantus' in its ``quantus`` baseline mode).
- ``road``: ROAD, most relevant first, noisy linear imputation (``explanations.metrics.road``, equal
  to Quantus' with its channel-indexing defect fixed).
- ``deletion`` / ``insertion``: Petsiuk et al.'s AUCs (``explanations.metrics.deletion``, ours).
- ``randomisation``: the model-parameter randomisation check (``explanations.metrics.randomisation``,
  Quantus' cascading randomisation, scored per clip); it has no random-order control.

``score_random`` is the same metric for a map of independent uniform pixel values drawn from a
generator seeded by (seed, video, clip), so the control of a clip is the same for every model,
method and batch: the chance level a real map should beat.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from explanations.irof import irof
from explanations.metrics.deletion import deletion_insertion
from explanations.metrics.randomisation import GRANULARITIES, randomisation
from explanations.metrics.road import NOISE, PERCENTAGES, road

METRICS = ("irof", "road", "deletion", "insertion", "randomisation")
WITHOUT_RANDOM_CONTROL = ("randomisation",)
# better when: higher (IROF, insertion), lower (ROAD, deletion: removing the top pixels hurts),
# lower (randomisation: the map changes when the weights do)
HIGHER_IS_BETTER = {"irof": True, "road": False, "deletion": False, "insertion": True, "randomisation": False}


@dataclass(frozen=True)
class MetricSettings:
    irof_baseline: str = "per_image_mean"
    road_percentages: tuple[int, ...] = PERCENTAGES
    road_noise: float = NOISE
    deletion_steps: int = 50
    randomisation_granularity: str = "stage"
    seed: int = 0
    forward_batch: int | str = "auto"  # IROF's; the others use 64 where "auto"


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown faithfulness metric {metric!r}; allowed: {list(METRICS)}")


def random_maps(keys: list[tuple[str, int]], shape: tuple[int, int], seed: int) -> np.ndarray:
    """(N, H, W) uniform maps, one per (video, clip), independent of the batch it is in."""
    return np.stack([np.random.default_rng([seed, zlib.crc32(video.encode()), clip]).random(shape)
                     for video, clip in keys])


def score(metric: str, model: torch.nn.Module, x: torch.Tensor, maps, target: torch.Tensor,
          settings: MetricSettings, *, segments=None,
          explain: Callable | None = None) -> np.ndarray:
    """(N,) scores of one metric for maps (N, H, W) of ``x`` for ``target``. ``explain(model, x,
    target)`` (the method that made ``maps``) is needed by ``randomisation`` only."""
    check_metric(metric)
    batch = 64 if settings.forward_batch == "auto" else int(settings.forward_batch)
    if metric == "irof":
        return irof(model, x, maps, target, segments=segments, baseline=settings.irof_baseline,
                    batch_size=settings.forward_batch).score
    if metric == "road":
        return road(model, x, maps, target, percentages=settings.road_percentages, noise=settings.road_noise,
                    seed=settings.seed, batch_size=batch).score
    if metric in ("deletion", "insertion"):
        return deletion_insertion(model, x, maps, target, mode=metric, steps=settings.deletion_steps,
                                  batch_size=batch).score
    if explain is None:
        raise ValueError("randomisation needs the explanation method (explain=)")
    maps = maps if isinstance(maps, torch.Tensor) else torch.as_tensor(maps)
    return randomisation(model, x, target, maps, explain, granularity=settings.randomisation_granularity).score


__all__ = ["METRICS", "GRANULARITIES", "HIGHER_IS_BETTER", "MetricSettings", "WITHOUT_RANDOM_CONTROL",
           "check_metric", "random_maps", "score"]
