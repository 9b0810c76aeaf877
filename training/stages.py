"""Stages by dotted name (``package.module:function``), imported only when a sweep runs them,
so ``training`` never imports the folders that build on it (pruning, analysis)."""
from __future__ import annotations

import importlib
from typing import Callable

STAGES = {
    "data": "ingest.stage:run_data_stage",
    "train": "training.tune:run_train_stage",
    "fuse": "training.fusion:run_fusion_stage",
    "prune": "pruning.schedule:run_prune_stage",
    "explain": "analysis.explain:run_explain_stage",
    "report": "analysis.report:run_report_stage",
}


class StageUnavailable(ImportError):
    """The stage's module or function does not exist (yet) in this checkout."""


def load_stage(target: str) -> Callable:
    """The function named ``module:function``; :class:`StageUnavailable` if either is absent.

    An import error raised *inside* an existing module is a bug there and propagates as is.
    """
    module_name, _, function = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise StageUnavailable(f"{target}: module {exc.name} does not exist") from exc
        raise
    if not hasattr(module, function):
        raise StageUnavailable(f"{target}: {module_name} has no {function}")
    return getattr(module, function)


def run_stage_task(target: str, config: dict, resume: bool):
    """A stage run as a Ray task: the config travels as a plain dict and the context is made
    here (``training.sweep`` may be ``__main__`` in the driver, so its classes do not pickle)."""
    from shards.threads import pin_threads

    from .config import ExperimentConfig
    from .sweep import SweepContext
    pin_threads()  # the task's CPU (1): synthetic videos, figures
    cfg = ExperimentConfig.from_dict(config)
    return load_stage(target)(cfg, SweepContext(config=cfg, paths=cfg.paths, resume=resume))
