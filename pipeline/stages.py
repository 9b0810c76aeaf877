"""The sweep's stages, in the order a full sweep runs them, as plain imports.

Each stage is a function ``(cfg, ctx)``; ``ctx`` is a :class:`SweepContext` (stages read only
``ctx.resume``). The stage functions live with their domain (``ingest.stage``,
``training.fusion``, ``explanations.stage``, ``analysis.report``) or, where they are Ray Tune
glue, here in ``pipeline`` (``pipeline.tune``, ``pipeline.prune_stage``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from analysis.report import run_report_stage
from core.config import ExperimentConfig, ExperimentPaths
from core.threads import pin_threads
from explanations.stage import run_explain_stage
from ingest.stage import run_data_stage
from pipeline.prune_stage import run_prune_stage
from pipeline.tune import run_train_stage
from training.fusion import run_fusion_stage

STAGES: dict[str, Callable] = {
    "data": run_data_stage,
    "train": run_train_stage,
    "fuse": run_fusion_stage,
    "prune": run_prune_stage,
    "explain": run_explain_stage,
    "report": run_report_stage,
}


@dataclass
class SweepContext:
    """What every stage gets besides the config."""
    config: ExperimentConfig
    paths: ExperimentPaths
    resume: bool = False


def stage_target(stage: str) -> str:
    """Where a stage's function lives, ``module:function`` (the dry run prints it)."""
    fn = STAGES[stage]
    return f"{fn.__module__}:{fn.__name__}"


def run_stage_task(stage: str, config: dict, resume: bool):
    """A stage run as a Ray task: the config travels as a plain dict and the context is made
    here (``pipeline.sweep`` may be ``__main__`` in the driver, so its classes do not pickle)."""
    pin_threads()  # the task's CPU (1): synthetic videos, figures
    cfg = ExperimentConfig.from_dict(config)
    return STAGES[stage](cfg, SweepContext(config=cfg, paths=cfg.paths, resume=resume))
