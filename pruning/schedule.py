"""The iterative schedule: prune → fine-tune → evaluate → checkpoint → `accuracy` row, step by step.

Step k of a (stream, run) chain starts from step k − 1's checkpoint (step 0 is the trained
baseline), removes 4 % of the prunable channels that remain (so 1 − 0.96^k of the
baseline's are gone after step k: the target is recomputed against the baseline each step,
so rounding never drifts), fine-tunes with the BN-L1 subgradient, evaluates on the test
videos exactly like the baseline and writes ``checkpoints/<stream>/run<r>/step<k>.pt``.
The rows of a step are written before its checkpoint, and a step counts as done once its
checkpoint exists: a chain interrupted anywhere resumes at the first unfinished step.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable

from torch import nn
from tqdm import tqdm

from analysis.results import write_rows
from pruning import prune_model
from pruning.accounting import pruning_stats
from pruning.groups import count_prunable_channels
from pruning.slimming import bn_l1_subgradient
from training.checkpoint import load_checkpoint, save_checkpoint
from training.config import ExperimentConfig, PruneConfig
from training.evaluate import evaluate
from training.loop import train


@dataclass
class ChainLoaders:
    """What fine-tuning and evaluation read: batches of ``{"x", "label", "video", ...}``."""
    train: Iterable[dict]
    val: Iterable[dict] | None
    test: Iterable[dict]


def step_ratio(step: int, step_fraction: float) -> float:
    """Fraction of the baseline's prunable channels removed after ``step`` steps: 1 − (1 − f)^k."""
    return 1.0 - (1.0 - step_fraction) ** step


def prune_step(model: nn.Module, baseline_channels: int, step: int, prune: PruneConfig) -> nn.Module:
    """``model`` (the step k − 1 model) pruned so that ``step_ratio(step)`` of the baseline's
    ``baseline_channels`` prunable channels are gone."""
    remaining = count_prunable_channels(model, residual=prune.residual)
    removed_so_far = baseline_channels - remaining
    to_remove = round(step_ratio(step, prune.step_fraction) * baseline_channels) - removed_so_far
    return prune_model(model, max(to_remove, 0) / remaining, residual=prune.residual,
                       min_channels=prune.min_channels, round_to=prune.round_to)


def first_unfinished_step(cfg: ExperimentConfig, stream: str, run: int) -> int:
    """The step a chain (re)starts at: the first one without a checkpoint (steps + 1 when done)."""
    for step in range(1, cfg.prune.steps + 1):
        if not cfg.paths.checkpoint(stream, run, step).is_file():
            return step
    return cfg.prune.steps + 1


def run_chain(cfg: ExperimentConfig, stream: str, run: int, loaders: ChainLoaders) -> list[dict]:
    """Run (or resume) the chain of one (stream, run); returns the `accuracy` rows it wrote."""
    paths, prune = cfg.paths, cfg.prune
    start = first_unfinished_step(cfg, stream, run)
    if start > prune.steps:
        return []
    baseline = load_checkpoint(paths.checkpoint(stream, run, 0))
    classes = baseline.classes
    model = baseline.model if start == 1 else load_checkpoint(paths.checkpoint(stream, run, start - 1),
                                                              classes=classes).model
    baseline_channels = count_prunable_channels(baseline.model, residual=prune.residual)
    finetune = dataclasses.replace(cfg.train, epochs=prune.finetune_epochs, lr=prune.lr,
                                   early_stopping_patience=0)
    seed = cfg.run_seed(run)
    rows = []
    for step in tqdm(range(start, prune.steps + 1), desc=f"prune {stream} run{run}", unit="step", disable=None):
        model = prune_step(model, baseline_channels, step, prune)
        result = train(model, loaders.train, loaders.val, finetune, seed=seed + step,
                       after_backward=lambda m: bn_l1_subgradient(m, prune.sparsity, residual=prune.residual))
        model = result.model
        evaluation = evaluate(model, loaders.test, len(classes), amp=cfg.train.amp)
        stats = pruning_stats(baseline.model, model, residual=prune.residual, input_size=cfg.model.input_size)
        checkpoint = paths.checkpoint(stream, run, step)
        partition = f"{stream}/run{run}/step{step}"
        row = evaluation.accuracy_row(experiment=cfg.experiment.name, stream=stream, run=run, seed=seed,
                                      split=cfg.data.split, step=step,
                                      prune_ratio=step_ratio(step, prune.step_fraction),
                                      checkpoint=str(checkpoint), **stats)
        write_rows(paths.results, "accuracy", [row], partition=partition)
        epochs = [dict(experiment=cfg.experiment.name, stream=stream, run=run, step=step, **entry)
                  for entry in result.state.history]
        if epochs:
            write_rows(paths.results, "epochs", epochs, partition=partition)
        save_checkpoint(checkpoint, model, epoch=prune.finetune_epochs, config=cfg, classes=classes,
                        extra={"step": step, "prune_ratio": row["prune_ratio"], **stats})
        rows.append(row)
    return rows
