"""Ray Tune: one function trial per (stream, run) trains, evaluates and records one model.

A trial checkpoints every epoch through ``tune.report(..., checkpoint=...)`` and, when
Tune retries it after a failure (``FailureConfig.max_failures``), resumes from
``tune.get_checkpoint()``. Its results (final checkpoint, per-video scores, ``accuracy``
and ``epochs`` rows) are written once, at the end, each atomically under a name fixed by
(stream, run): a retried trial replaces them, never duplicates them. ``--resume`` restores
an interrupted experiment with ``Tuner.restore``: finished trials are not run again.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

import polars as pl
import torch  # noqa: F401 (loaded before pin_threads sizes its pools)
from ray import tune

from core.damaged import readable
from core.results import model_partition, table_path, write_rows
from core.resources import trial_resources
from core.threads import pin_threads

from training.checkpoint import load_checkpoint, save_checkpoint
from core.config import STREAMS, ExperimentConfig
from training.data import light_test_loader, make_loaders, stream_data, train_eval_loader
from training.evaluate import evaluate
from training.fusion import score_and_save, wants_train_scores
from training.loop import TrainState, epoch_metrics, seed_everything, train
from training.models import build_stream, weights_name
from training.speed import measure_speed
from pruning.schedule import write_gammas
from pruning.slimming import bn_l1_subgradient
from pipeline.tune_state import check_resume_root, claim_tune_state, storage_uri

TRIAL_CHECKPOINT = "model.pt"


def _sparsity_hook(cfg: ExperimentConfig, stream: str) -> Callable | None:
    """BN-L1 during baseline training (Network Slimming)."""
    sparsity = cfg.stream_train(stream).sparsity
    if sparsity <= 0:
        return None
    # the same BatchNorms the prune stage will score (internal only, or residual groups too)
    return lambda model: bn_l1_subgradient(model, sparsity, residual=cfg.prune.residual)




# what Tune's console table shows (metric -> column header); the rest is in the trial logs,
# TensorBoard and the `epochs`/`accuracy` tables
CONSOLE_COLUMNS = {
    "train": {"epoch": "epoch", "train_loss": "train loss", "train_acc": "train acc", "val_loss": "val loss",
              "val_acc": "val acc", "lr": "lr", "train_samples_per_s": "samples/s",
              "video_accuracy": "video acc"},
    "prune": {"step": "step", "epoch": "epoch", "channels_removed": "channels rm", "params_removed": "params rm",
              "threshold": "|gamma| thr", "val_acc": "val acc", "train_samples_per_s": "samples/s",
              "video_accuracy": "video acc"},
}


def console_reporter(name: str, chains: bool = False) -> tune.CLIReporter:
    """Tune's console table for stage ``name``: trials done/total, (stream, run[, chain]), its columns."""
    return tune.CLIReporter(metric_columns=CONSOLE_COLUMNS.get(name, CONSOLE_COLUMNS["train"]),
                            parameter_columns=["stream", "run"] + (["chain"] if chains else []),
                            max_report_frequency=30)


def run_trial(cfg: ExperimentConfig, stream: str, run: int,
              after_checkpoint: Callable[[TrainState], None] | None = None) -> dict:
    """Train, evaluate and record one (stream, run); ``after_checkpoint`` runs after each
    epoch's checkpoint has been reported (a place to observe or interrupt a trial)."""
    pin_threads(cfg.ray.cpus_per_trial)  # torch, OpenCV, OpenMP/MKL: the trial's CPUs, not the machine's
    seed, paths = cfg.run_seed(run), cfg.paths
    settings = cfg.stream_train(stream)  # train.<stream>.* over train.*
    data = stream_data(cfg, seed)
    loaders = make_loaders(cfg, stream, data, seed)
    seed_everything(seed)  # the initial weights too: a (stream, run) trains the same way every time
    model = build_stream(stream, cfg.model.arch, len(data.classes), weights=cfg.model.weights,
                         dropout=cfg.stream_dropout(stream), freeze_backbone=cfg.model.freeze_backbone,
                         gamma_init=cfg.model.gamma_init,
                         width=cfg.model.width)
    state, optimizer_state = None, None
    restored = tune.get_checkpoint()
    if restored is not None:
        with restored.as_directory() as folder:
            ck = load_checkpoint(Path(folder) / TRIAL_CHECKPOINT, classes=data.classes, arch=cfg.model.arch)
        model, optimizer_state = ck.model, ck.optimizer_state
        state = TrainState.from_dict(ck.extra["train_state"])
    resumed_from = state.epoch if state else 0
    if state is None:  # |γ| before (sparsity) training, for Network Slimming's before/after figure
        write_gammas(cfg, model, stream, run, 0, "initial")

    def on_epoch(state: TrainState, model, optimizer) -> None:
        with tempfile.TemporaryDirectory() as folder:
            save_checkpoint(Path(folder) / TRIAL_CHECKPOINT, model, epoch=state.epoch, config=cfg,
                            classes=data.classes, optimizer=optimizer,
                            extra={"train_state": state.to_dict()})
            metrics = {"epoch": state.epoch, "resumed_from": resumed_from,
                       **epoch_metrics(state.history, state.epoch, state.samples)}
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
            print(f"{stream} run{run} epoch {state.epoch}/{settings.epochs}: "
                  + " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k not in ("epoch", "resumed_from")),
                  flush=True)  # one line per epoch in the trial's log
        if after_checkpoint is not None:
            after_checkpoint(state)

    result = train(model, loaders["train"], loaders["val"], settings, after_backward=_sparsity_hook(cfg, stream),
                   on_epoch=on_epoch, state=state, optimizer_state=optimizer_state, seed=seed)
    model, state = result.model, result.state
    checkpoint = save_checkpoint(paths.checkpoint(stream, run, 0), model, epoch=state.epoch, config=cfg,
                                 classes=data.classes, extra={"train_state": {**state.to_dict(), "best_state": None}})
    write_gammas(cfg, model, stream, run, 0, "trained")
    amp = settings.amp
    test = score_and_save(model, loaders["test"], len(data.classes), paths.scores(stream, run, 0, "test"),
                          amp=amp, desc="test")
    # the unpruned model under the light protocol: what each prune's before-fine-tuning figure is set against
    light = evaluate(model, light_test_loader(cfg, stream, data), len(data.classes), amp=amp, desc="light test")
    if wants_train_scores(cfg):
        score_and_save(model, train_eval_loader(cfg, stream, data), len(data.classes),
                       paths.scores(stream, run, 0, "train"), amp=amp, desc="train scores")
    keys = dict(experiment=cfg.experiment.name, stream=stream, run=run)
    partition = model_partition(stream, run, 0)
    write_rows(paths.results, "epochs", [{**keys, "step": 0, **row} for row in state.history],
               partition=partition)
    write_rows(paths.results, "accuracy", [test.accuracy_row(**keys, seed=seed, split=cfg.data.split,
                                                             checkpoint=str(checkpoint),
                                                             residual=cfg.prune.residual,
                                                             video_accuracy_before_finetune=light.video_accuracy,
                                                             weights=weights_name(cfg.model.arch, cfg.model.weights),
                                                             **measure_speed(model, cfg.model.input_size,
                                                                             repeats=cfg.eval.speed_repeats,
                                                                             throughput_batch=cfg.eval.throughput_batch))],
               partition=partition)
    return {"epoch": state.epoch, "resumed_from": resumed_from, "video_accuracy": test.video_accuracy,
            "clip_accuracy": test.clip_accuracy, "done": True}


def finished_metrics(cfg: ExperimentConfig, stream: str, run: int) -> dict | None:
    """The recorded result of a (stream, run) whose outputs are all written, else None.

    Done means the results store holds the trial's rows, readable (`accuracy`, written last,
    `epochs` and both `gammas` phases), and the inputs of later stages exist: its checkpoint
    (the prune stage's) and its score files (the fuse stage's). The sweep sets damaged ones
    aside (``core.damaged``), so a missing one reruns the cell.
    """
    results, partition = cfg.paths.results, model_partition(stream, run, 0)
    row_file = table_path(results, "accuracy", partition)
    needed = [row_file, table_path(results, "epochs", partition),
              *(table_path(results, "gammas", f"{partition}/{phase}") for phase in ("initial", "trained"))]
    inputs = [cfg.paths.checkpoint(stream, run, 0), cfg.paths.scores(stream, run, 0, "test"),
              *([cfg.paths.scores(stream, run, 0, "train")] if wants_train_scores(cfg) else [])]
    if not (all(map(readable, needed)) and all(p.is_file() for p in inputs)):
        return None
    row = pl.read_parquet(row_file).row(0, named=True)
    return {"video_accuracy": row["video_accuracy"], "clip_accuracy": row["clip_accuracy"],
            "done": True, "skipped": True}


def train_trial(params: dict, experiment: dict, resume: bool = False) -> None:
    """The Tune function trainable: ``params`` = {stream, run}; ``experiment`` the config dict.

    A (stream, run) whose results are already written is not trained again, on a plain
    rerun or a ``--resume`` (even if Tune's own state missed its completion before an
    interruption); the sweep's config check guarantees they came from this config.
    """
    cfg = ExperimentConfig.from_dict(experiment)
    stream, run = params["stream"], params["run"]
    done = finished_metrics(cfg, stream, run)
    tune.report(done or run_trial(cfg, stream, run))




def make_tuner(cfg: ExperimentConfig, *, resume: bool = False, trainable: Callable = train_trial,
               name: str = "train", chains: list[str] | None = None) -> tune.Tuner:
    """A new Tuner over stream x run (x chain, when ``chains`` are given: the prune stage), or
    the interrupted one restored (``resume``, only from Tune state this experiment root wrote:
    ``check_resume_root``).

    ``trainable(params, experiment, resume)`` is ``train_trial`` or a wrapper around it.
    """
    # Trials checkpoint every epoch and keep one, so Tune snapshots the experiment state each
    # time; with short epochs it logs a "may become a bottleneck" warning per epoch. The
    # snapshot is small; keep the log readable (a user's own setting wins).
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune's newer console output ignores a progress_reporter (and picks 4 metrics itself)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    storage = storage_uri(cfg)
    fn = tune.with_resources(tune.with_parameters(trainable, experiment=cfg.to_dict(), resume=resume),
                             trial_resources(cfg))
    path = f"{storage}/{name}"
    if resume and check_resume_root(cfg, name):
        return tune.Tuner.restore(path, trainable=fn, resume_unfinished=True, resume_errored=True)
    claim_tune_state(cfg, name)
    grid = {"stream": tune.grid_search(list(STREAMS)),
            "run": tune.grid_search(list(range(1, cfg.train.runs + 1)))}
    if chains:
        grid["chain"] = tune.grid_search(list(chains))
    return tune.Tuner(
        fn,
        param_space=grid,
        tune_config=tune.TuneConfig(max_concurrent_trials=None, reuse_actors=True),
        run_config=tune.RunConfig(
            name=name, storage_path=storage, verbose=1, progress_reporter=console_reporter(name, bool(chains)),
            failure_config=tune.FailureConfig(max_failures=cfg.ray.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))


def unfinished_cells(cfg: ExperimentConfig, finished: Callable[[ExperimentConfig, str, int], object]) -> list:
    """(stream, run) cells whose results the store lacks (``finished`` falsy).

    A restored Tuner (``--resume``) never reruns a trial its saved state counts as finished,
    even if that trial's rows were lost or set aside as damaged since: after restoring, a
    stage with such cells fits a fresh Tuner, whose trials skip every finished cell.
    """
    return [(s, r) for s in STREAMS for r in range(1, cfg.train.runs + 1) if not finished(cfg, s, r)]


def run_train_stage(cfg: ExperimentConfig, ctx) -> None:
    """Train every (stream, run) on Ray Tune; raise if any trial failed for good."""
    results = make_tuner(cfg, resume=ctx.resume).fit()
    if ctx.resume and unfinished_cells(cfg, finished_metrics):  # see unfinished_cells
        results = make_tuner(cfg).fit()
    failed = [(r.path, r.error) for r in results if r.error is not None]
    if failed:
        raise RuntimeError(f"{len(failed)} training trial(s) failed: " +
                           "; ".join(f"{path}: {error}" for path, error in failed))
