"""The iterative schedule: prune → fine-tune → evaluate → checkpoint → `accuracy` row, step by step.

Step k of a (stream, run) chain starts from step k − 1's checkpoint (step 0 is the trained
baseline), removes 4 % of the prunable channels that remain (so 1 − 0.96^k of the
baseline's are gone after step k: the target is recomputed against the baseline each step,
so rounding never drifts), fine-tunes with the BN-L1 subgradient, evaluates on the test
videos exactly like the baseline (saving its per-video scores for the ``fuse`` stage) and writes
``checkpoints/<stream>/run<r>/step<k>.pt``.
The rows of a step are written before its checkpoint. A step counts as done when the results
store holds its rows, readable (`epochs` when it fine-tunes; `accuracy`, `gammas` where it is evaluated), and its
checkpoint (the next step's input) exists: a checkpoint alone proves nothing. A chain
interrupted anywhere, or whose rows were set aside as damaged, resumes at the first unfinished step.

Chains (``prune.chains``, issue 27): ``slimming`` is the study above; ``random`` removes the same
number of channels under the same minimum width and rounding rules but ranks them by a seeded
uniform random score (does |γ| beat chance); ``finetune_only`` removes nothing and fine-tunes the
unpruned model exactly as each step does (same epochs, lr, λ, seeds), which separates removal
from extra training. The controls fine-tune at every step but are evaluated (scores, `accuracy`
and `gammas` rows) only at ``tested_steps``: the explained steps and the last one. Their
checkpoints go to ``checkpoints/<chain>/`` (every step: a chain resumes at its first missing one).

``pipeline.prune_stage`` runs the chains as Ray Tune trials (the sweep's ``prune`` stage).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable, Iterable

from torch import nn

import numpy as np

from core.damaged import readable
from core.results import model_partition, table_path, write_rows
from pruning import prune_model
from pruning.accounting import pruning_stats
from pruning.groups import count_prunable_channels
from pruning.slimming import bn_l1_subgradient, gamma_histogram, prune_threshold, random_scores, select_channels
from core.progress import progress
from training.checkpoint import load_checkpoint, save_checkpoint
from core.config import STUDY_CHAIN, ExperimentConfig, PruneConfig, tested_steps
from training.evaluate import evaluate
from training.fusion import score_and_save, wants_train_scores
from training.loop import epoch_metrics, train
from training.models import weights_name
from training.speed import measure_speed


@dataclass
class ChainLoaders:
    """What fine-tuning and evaluation read: batches of ``{"x", "label", "video", ...}``."""
    train: Iterable[dict]
    val: Iterable[dict] | None
    test: Iterable[dict]
    train_eval: Iterable[dict] | None = None  # train clips, eval transform: scores for SVM fusion
    # test clips under the light protocol (eval.light_clips, one crop): the accuracy right after each
    # prune, before fine-tuning (row column video_accuracy_before_finetune; None = not measured)
    light_test: Iterable[dict] | None = None

# what Tune gets about a pruning step (besides step and accuracy), per step and per fine-tuning epoch


def step_ratio(step: int, step_fraction: float) -> float:
    """Fraction of the baseline's prunable channels removed after ``step`` steps: 1 − (1 − f)^k."""
    return 1.0 - (1.0 - step_fraction) ** step


def _ratio_of_remaining(model: nn.Module, baseline_channels: int, step: int, prune: PruneConfig) -> float:
    remaining = count_prunable_channels(model, residual=prune.residual)
    removed_so_far = baseline_channels - remaining
    to_remove = round(step_ratio(step, prune.step_fraction) * baseline_channels) - removed_so_far
    return max(to_remove, 0) / remaining


def prune_step(model: nn.Module, baseline_channels: int, step: int, prune: PruneConfig, *,
               chain: str = STUDY_CHAIN, seed: int = 0, stream: str = "") -> nn.Module:
    """``model`` (the step k − 1 model) pruned so that ``step_ratio(step)`` of the baseline's
    ``baseline_channels`` prunable channels are gone: by |γ| (``slimming``), by a random score
    seeded by (``seed``, ``step``, ``stream``) (``random``), or not at all (``finetune_only``)."""
    if chain == "finetune_only":
        return model
    scores = {} if chain == STUDY_CHAIN else {"scores": random_scores(random_seed(seed, step, stream))}
    return prune_model(model, _ratio_of_remaining(model, baseline_channels, step, prune), residual=prune.residual,
                       min_channels=prune.min_channels, round_to=prune.round_to, **scores)


def random_seed(seed: int, step: int, stream: str) -> int:
    """The random chain's seed of one step: independent across runs, steps and streams."""
    return int(np.random.SeedSequence([seed, step, zlib.crc32(stream.encode())]).generate_state(1)[0])




def step_threshold(model: nn.Module, baseline_channels: int, step: int, prune: PruneConfig) -> float | None:
    """The |γ| threshold ``prune_step`` applies to ``model`` (the highest score it removes)."""
    plan = select_channels(model, _ratio_of_remaining(model, baseline_channels, step, prune),
                           residual=prune.residual, min_channels=prune.min_channels, round_to=prune.round_to)
    return prune_threshold(model, plan)


def write_gammas(cfg: ExperimentConfig, model: nn.Module, stream: str, run: int, step: int, phase: str,
                 threshold: float | None = None, chain: str = STUDY_CHAIN) -> None:
    """One model's |γ| histogram as rows of the `gammas` table (partition per stream/run/step/phase)."""
    residual = cfg.prune.residual
    rows = [dict(experiment=cfg.experiment.name, stream=stream, run=run, step=step, phase=phase,
                 residual=residual, threshold=threshold, chain=chain, **row)
            for row in gamma_histogram(model, residual=residual)]
    write_rows(cfg.paths.results, "gammas", rows, partition=model_partition(stream, run, step, chain, phase))


def step_done(cfg: ExperimentConfig, stream: str, run: int, step: int, chain: str = STUDY_CHAIN) -> bool:
    """The results store holds step ``step``'s rows, readable (`epochs` when it fine-tunes;
    `accuracy` and `gammas` where the chain evaluates it), and the inputs of later stages
    exist: its checkpoint and, where the chain evaluates it, its score files (the fuse stage's)."""
    results, paths = cfg.paths.results, cfg.paths
    partition = model_partition(stream, run, step, chain)
    rows, inputs = [], [paths.checkpoint(stream, run, step, chain)]
    if cfg.stream_prune(stream).finetune_epochs > 0:
        rows.append(table_path(results, "epochs", partition))
    if step in tested_steps(cfg, chain):
        rows += [table_path(results, "accuracy", partition), table_path(results, "gammas", f"{partition}/finetuned")]
        inputs.append(paths.scores(stream, run, step, "test", chain))
        if wants_train_scores(cfg):
            inputs.append(paths.scores(stream, run, step, "train", chain))
    return all(p.is_file() for p in inputs) and all(map(readable, rows))


def first_unfinished_step(cfg: ExperimentConfig, stream: str, run: int, chain: str = STUDY_CHAIN) -> int:
    """The step a chain (re)starts at: the first one not done (``step_done``; steps + 1 when all are)."""
    for step in range(1, cfg.prune.steps + 1):
        if not step_done(cfg, stream, run, step, chain):
            return step
    return cfg.prune.steps + 1


def run_chain(cfg: ExperimentConfig, stream: str, run: int, loaders: ChainLoaders, *, resume: bool = True,
              on_step: Callable[[dict], None] | None = None,
              on_epoch: Callable[[dict], None] | None = None, chain: str = STUDY_CHAIN) -> list[dict]:
    """Run ``chain`` of one (stream, run) from its first unfinished step (``resume``) or from
    step 1; ``on_step(row)`` runs after each evaluated step, ``on_epoch(metrics)`` after each
    fine-tuning epoch (``step``, ``threshold``, ``channels_removed``/``params_removed``/
    ``flops_removed`` and ``training.loop.epoch_metrics``). Returns the `accuracy` rows written."""
    paths, prune = cfg.paths, cfg.prune
    start = first_unfinished_step(cfg, stream, run, chain) if resume else 1
    if start > prune.steps:
        return []
    baseline = load_checkpoint(paths.checkpoint(stream, run, 0), arch=cfg.model.arch)
    classes = baseline.classes
    model = baseline.model if start == 1 else load_checkpoint(paths.checkpoint(stream, run, start - 1, chain),
                                                              classes=classes).model
    tested = set(tested_steps(cfg, chain))
    baseline_channels = count_prunable_channels(baseline.model, residual=prune.residual)
    finetune = cfg.finetune_train(stream)  # train.<stream> with prune[.<stream>] lr, epochs, sparsity
    seed = cfg.run_seed(run)
    rows = []
    for step in progress(range(start, prune.steps + 1), desc=f"prune {stream} run{run} {chain}", unit="step"):
        # the |γ| threshold is slimming's; a random score's threshold means nothing
        threshold = step_threshold(model, baseline_channels, step, prune) if chain == STUDY_CHAIN else None
        model = prune_step(model, baseline_channels, step, prune, chain=chain, seed=seed, stream=stream)
        # the structure is final now (fine-tuning changes weights only)
        stats = pruning_stats(baseline.model, model, residual=prune.residual, input_size=cfg.model.input_size)
        pruned = {"step": step, "threshold": threshold, **stats}
        # Liu et al.'s evidence that sparsity worked: the accuracy right after removal
        before = None if loaders.light_test is None or step not in tested else evaluate(
            model, loaders.light_test, len(classes), amp=finetune.amp, desc="before fine-tuning").video_accuracy
        report_epoch = None if on_epoch is None else \
            (lambda state, *_, pruned=pruned: on_epoch({**pruned, "epoch": state.epoch,
                                                        **epoch_metrics(state.history, state.epoch, state.samples)}))
        result = train(model, loaders.train, loaders.val, finetune, seed=seed + step,
                       loader_epoch_offset=(step - 1) * finetune.epochs,  # a resumed chain reads the same
                       after_backward=lambda m: bn_l1_subgradient(m, finetune.sparsity, residual=prune.residual),
                       on_epoch=report_epoch)
        model = result.model
        checkpoint = paths.checkpoint(stream, run, step, chain)
        partition = model_partition(stream, run, step, chain)
        # prune_ratio: the schedule's target at this step, for every chain (finetune_only removes
        # nothing: its channels_removed says so), so chains line up step by step
        ratio = step_ratio(step, prune.step_fraction)
        epochs = [dict(experiment=cfg.experiment.name, stream=stream, run=run, step=step, chain=chain, **entry)
                  for entry in result.state.history]
        if epochs:
            write_rows(paths.results, "epochs", epochs, partition=partition)
        row = None
        if step in tested:
            # per-video scores, so the fuse stage can fuse the streams at this step too
            evaluation = score_and_save(model, loaders.test, len(classes),
                                        paths.scores(stream, run, step, "test", chain), amp=finetune.amp)
            if loaders.train_eval is not None:
                score_and_save(model, loaders.train_eval, len(classes),
                               paths.scores(stream, run, step, "train", chain), amp=finetune.amp)
            speed = measure_speed(model, cfg.model.input_size, repeats=cfg.eval.speed_repeats,
                                  throughput_batch=cfg.eval.throughput_batch)
            row = evaluation.accuracy_row(experiment=cfg.experiment.name, stream=stream, run=run, seed=seed,
                                          split=cfg.data.split, step=step, prune_ratio=ratio, chain=chain,
                                          checkpoint=str(checkpoint), residual=prune.residual,
                                          threshold=threshold, video_accuracy_before_finetune=before,
                                          weights=weights_name(cfg.model.arch, cfg.model.weights), **stats, **speed)
            write_rows(paths.results, "accuracy", [row], partition=partition)
            write_gammas(cfg, model, stream, run, step, "finetuned", threshold, chain)
        save_checkpoint(checkpoint, model, epoch=finetune.epochs, config=cfg, classes=classes,
                        extra={"step": step, "prune_ratio": ratio, "chain": chain, **stats})
        if row is not None:
            rows.append(row)
            if on_step is not None:
                on_step(row)
    return rows


