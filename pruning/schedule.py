"""The iterative schedule: prune → fine-tune → evaluate → checkpoint → `accuracy` row, step by step.

Step k of a (stream, run) chain starts from step k − 1's checkpoint (step 0 is the trained
baseline), removes 4 % of the prunable channels that remain (so 1 − 0.96^k of the
baseline's are gone after step k: the target is recomputed against the baseline each step,
so rounding never drifts), fine-tunes with the BN-L1 subgradient, evaluates on the test
videos exactly like the baseline (saving its per-video scores for the ``fuse`` stage) and writes
``checkpoints/<stream>/run<r>/step<k>.pt``.
The rows of a step are written before its checkpoint, and a step counts as done once its
checkpoint exists: a chain interrupted anywhere resumes at the first unfinished step.

On Ray Tune (``run_prune_stage``, the sweep's ``prune`` stage) one function trial runs the
chain of one (stream, run), reporting after every step. A trial that Tune retries after a
failure, or any trial of a ``--resume``d sweep, resumes its chain from the step checkpoints
on disk; a fresh sweep starts every chain at step 1 again (its baselines may be new).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch  # noqa: F401 (loaded before pin_threads sizes its pools)
from ray import tune
from torch import nn

from analysis.results import write_rows
from pruning import prune_model
from pruning.accounting import pruning_stats
from pruning.groups import count_prunable_channels
from pruning.slimming import bn_l1_subgradient, gamma_histogram, prune_threshold, select_channels
from shards.progress import progress
from shards.threads import pin_threads
from training.checkpoint import load_checkpoint, save_checkpoint
from training.config import ExperimentConfig, PruneConfig
from training.data import light_test_loader, make_loaders, stream_data, train_eval_loader
from training.evaluate import evaluate
from training.fusion import score_and_save, wants_train_scores
from training.loop import train
from training.models import weights_name
from training.speed import measure_speed
from training.tune import epoch_metrics, make_tuner


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
STEP_METRICS = ("channels_removed", "params_removed", "flops_removed", "threshold")


def step_ratio(step: int, step_fraction: float) -> float:
    """Fraction of the baseline's prunable channels removed after ``step`` steps: 1 − (1 − f)^k."""
    return 1.0 - (1.0 - step_fraction) ** step


def _ratio_of_remaining(model: nn.Module, baseline_channels: int, step: int, prune: PruneConfig) -> float:
    remaining = count_prunable_channels(model, residual=prune.residual)
    removed_so_far = baseline_channels - remaining
    to_remove = round(step_ratio(step, prune.step_fraction) * baseline_channels) - removed_so_far
    return max(to_remove, 0) / remaining


def prune_step(model: nn.Module, baseline_channels: int, step: int, prune: PruneConfig) -> nn.Module:
    """``model`` (the step k − 1 model) pruned so that ``step_ratio(step)`` of the baseline's
    ``baseline_channels`` prunable channels are gone."""
    return prune_model(model, _ratio_of_remaining(model, baseline_channels, step, prune), residual=prune.residual,
                       min_channels=prune.min_channels, round_to=prune.round_to)


def step_threshold(model: nn.Module, baseline_channels: int, step: int, prune: PruneConfig) -> float | None:
    """The |γ| threshold ``prune_step`` applies to ``model`` (the highest score it removes)."""
    plan = select_channels(model, _ratio_of_remaining(model, baseline_channels, step, prune),
                           residual=prune.residual, min_channels=prune.min_channels, round_to=prune.round_to)
    return prune_threshold(model, plan)


def write_gammas(cfg: ExperimentConfig, model: nn.Module, stream: str, run: int, step: int, phase: str,
                 threshold: float | None = None) -> None:
    """One model's |γ| histogram as rows of the `gammas` table (partition per stream/run/step/phase)."""
    residual = cfg.prune.residual
    rows = [dict(experiment=cfg.experiment.name, stream=stream, run=run, step=step, phase=phase,
                 residual=residual, threshold=threshold, **row)
            for row in gamma_histogram(model, residual=residual)]
    write_rows(cfg.paths.results, "gammas", rows, partition=f"{stream}/run{run}/step{step}/{phase}")


def first_unfinished_step(cfg: ExperimentConfig, stream: str, run: int) -> int:
    """The step a chain (re)starts at: the first one without a checkpoint (steps + 1 when done)."""
    for step in range(1, cfg.prune.steps + 1):
        if not cfg.paths.checkpoint(stream, run, step).is_file():
            return step
    return cfg.prune.steps + 1


def run_chain(cfg: ExperimentConfig, stream: str, run: int, loaders: ChainLoaders, *, resume: bool = True,
              on_step: Callable[[dict], None] | None = None,
              on_epoch: Callable[[dict], None] | None = None) -> list[dict]:
    """Run the chain of one (stream, run) from its first unfinished step (``resume``) or from
    step 1; ``on_step(row)`` runs after each finished step, ``on_epoch(metrics)`` after each
    fine-tuning epoch (``step``, ``threshold``, ``channels_removed``/``params_removed``/
    ``flops_removed`` and ``training.tune.epoch_metrics``). Returns the `accuracy` rows written."""
    paths, prune = cfg.paths, cfg.prune
    start = first_unfinished_step(cfg, stream, run) if resume else 1
    if start > prune.steps:
        return []
    baseline = load_checkpoint(paths.checkpoint(stream, run, 0), arch=cfg.model.arch)
    classes = baseline.classes
    model = baseline.model if start == 1 else load_checkpoint(paths.checkpoint(stream, run, start - 1),
                                                              classes=classes).model
    baseline_channels = count_prunable_channels(baseline.model, residual=prune.residual)
    finetune = cfg.finetune_train(stream)  # train.<stream> with prune[.<stream>] lr, epochs, sparsity
    seed = cfg.run_seed(run)
    rows = []
    for step in progress(range(start, prune.steps + 1), desc=f"prune {stream} run{run}", unit="step"):
        threshold = step_threshold(model, baseline_channels, step, prune)
        model = prune_step(model, baseline_channels, step, prune)
        # the structure is final now (fine-tuning changes weights only)
        stats = pruning_stats(baseline.model, model, residual=prune.residual, input_size=cfg.model.input_size)
        pruned = {"step": step, "threshold": threshold, **stats}
        # Liu et al.'s evidence that sparsity worked: the accuracy right after removal
        before = None if loaders.light_test is None else evaluate(
            model, loaders.light_test, len(classes), amp=finetune.amp, desc="before fine-tuning").video_accuracy
        report_epoch = None if on_epoch is None else \
            (lambda state, *_, pruned=pruned: on_epoch({**pruned, "epoch": state.epoch,
                                                        **epoch_metrics(state.history, state.epoch, state.samples)}))
        result = train(model, loaders.train, loaders.val, finetune, seed=seed + step,
                       loader_epoch_offset=(step - 1) * finetune.epochs,  # a resumed chain reads the same
                       after_backward=lambda m: bn_l1_subgradient(m, finetune.sparsity, residual=prune.residual),
                       on_epoch=report_epoch)
        model = result.model
        # per-video scores, so the fuse stage can fuse the streams at this step too
        evaluation = score_and_save(model, loaders.test, len(classes), paths.scores(stream, run, step, "test"),
                                    amp=finetune.amp)
        if loaders.train_eval is not None:
            score_and_save(model, loaders.train_eval, len(classes), paths.scores(stream, run, step, "train"),
                           amp=finetune.amp)
        speed = measure_speed(model, cfg.model.input_size, repeats=cfg.eval.speed_repeats,
                              throughput_batch=cfg.eval.throughput_batch)
        checkpoint = paths.checkpoint(stream, run, step)
        partition = f"{stream}/run{run}/step{step}"
        row = evaluation.accuracy_row(experiment=cfg.experiment.name, stream=stream, run=run, seed=seed,
                                      split=cfg.data.split, step=step,
                                      prune_ratio=step_ratio(step, prune.step_fraction),
                                      checkpoint=str(checkpoint), residual=prune.residual,
                                      threshold=threshold, video_accuracy_before_finetune=before,
                                      weights=weights_name(cfg.model.arch, cfg.model.weights), **stats, **speed)
        write_rows(paths.results, "accuracy", [row], partition=partition)
        write_gammas(cfg, model, stream, run, step, "finetuned", threshold)
        epochs = [dict(experiment=cfg.experiment.name, stream=stream, run=run, step=step, **entry)
                  for entry in result.state.history]
        if epochs:
            write_rows(paths.results, "epochs", epochs, partition=partition)
        save_checkpoint(checkpoint, model, epoch=finetune.epochs, config=cfg, classes=classes,
                        extra={"step": step, "prune_ratio": row["prune_ratio"], **stats})
        rows.append(row)
        if on_step is not None:
            on_step(row)
    return rows


def run_prune_trial(cfg: ExperimentConfig, stream: str, run: int, *, resume: bool = False,
                    after_step: Callable[[dict], None] | None = None) -> dict:
    """The chain of one (stream, run) inside a Tune trial, reporting after every step;
    ``after_step(row)`` runs after a step's report (a place to observe or interrupt a trial)."""
    pin_threads(cfg.ray.cpus_per_trial)  # torch, OpenCV, OpenMP/MKL: the trial's CPUs, not the machine's
    resume = resume or tune.get_checkpoint() is not None  # a retried trial has its marker checkpoint
    start = first_unfinished_step(cfg, stream, run) if resume else 1
    if start > cfg.prune.steps:
        return {"step": cfg.prune.steps, "started_at_step": start, "done": True, "skipped": True}
    seed = cfg.run_seed(run)
    data = stream_data(cfg, seed)
    loaders = make_loaders(cfg, stream, data, seed)

    def report(row: dict) -> None:
        with tempfile.TemporaryDirectory() as folder:  # the marker that tells a retry to resume
            Path(folder, "step.txt").write_text(str(row["step"]))
            tune.report({"step": row["step"], "started_at_step": start, "video_accuracy": row["video_accuracy"],
                         **{k: row.get(k) for k in STEP_METRICS}}, checkpoint=tune.Checkpoint.from_directory(folder))
        if after_step is not None:
            after_step(row)

    def report_epoch(metrics: dict) -> None:  # per fine-tuning epoch, no checkpoint
        tune.report({"started_at_step": start, **metrics})
        print(f"{stream} run{run} step {metrics['step']} epoch {metrics['epoch']}: "
              + " ".join(f"{k}={v:.4g}" for k, v in metrics.items()
                         if k not in ("step", "epoch") and v is not None), flush=True)

    train_eval = train_eval_loader(cfg, stream, data) if wants_train_scores(cfg) else None
    light = light_test_loader(cfg, stream, data)
    rows = run_chain(cfg, stream, run, ChainLoaders(loaders["train"], loaders["val"], loaders["test"], train_eval,
                                                    light),
                     resume=resume, on_step=report, on_epoch=report_epoch)
    return {"step": rows[-1]["step"], "started_at_step": start, "video_accuracy": rows[-1]["video_accuracy"],
            "flops_removed": rows[-1]["flops_removed"], "done": True}


def prune_trial(params: dict, experiment: dict, resume: bool = False) -> None:
    """The Tune function trainable: ``params`` = {stream, run}; ``experiment`` the config dict."""
    cfg = ExperimentConfig.from_dict(experiment)
    # always from the first unfinished step: a plain rerun resumes too (the sweep's config
    # check guarantees the finished steps came from this config)
    tune.report(run_prune_trial(cfg, params["stream"], params["run"], resume=True))


def run_prune_stage(cfg: ExperimentConfig, ctx) -> None:
    """Prune every (stream, run) chain on Ray Tune; raise if any trial failed for good."""
    if not cfg.prune.enabled:
        print("prune: disabled in the config (prune.enabled: false)")
        return
    results = make_tuner(cfg, resume=ctx.resume, trainable=prune_trial, name="prune").fit()
    failed = [(r.path, r.error) for r in results if r.error is not None]
    if failed:
        raise RuntimeError(f"{len(failed)} pruning trial(s) failed: " +
                           "; ".join(f"{path}: {error}" for path, error in failed))
