"""The sweep's ``prune`` stage on Ray Tune: one function trial runs the chain of one (stream,
run, chain) (``pruning.schedule.run_chain``), reporting after every step. A trial that Tune
retries after a failure, or any trial of a ``--resume``d sweep, resumes its chain from the step
checkpoints on disk; a fresh sweep starts every chain at step 1 again (its baselines may be new).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import torch  # noqa: F401 (loaded before pin_threads sizes its pools)
from ray import tune

from core.config import STUDY_CHAIN, ExperimentConfig
from core.threads import pin_threads
from pipeline.tune import make_tuner, unfinished_cells
from pruning.schedule import ChainLoaders, first_unfinished_step, run_chain
from training.data import light_test_loader, make_loaders, stream_data, train_eval_loader
from training.fusion import wants_train_scores



STEP_METRICS = ("channels_removed", "params_removed", "flops_removed", "threshold")


def run_prune_trial(cfg: ExperimentConfig, stream: str, run: int, *, resume: bool = False,
                    after_step: Callable[[dict], None] | None = None, chain: str = STUDY_CHAIN) -> dict:
    """``chain`` of one (stream, run) inside a Tune trial, reporting after every evaluated step;
    ``after_step(row)`` runs after a step's report (a place to observe or interrupt a trial)."""
    pin_threads(cfg.ray.cpus_per_trial)  # torch, OpenCV, OpenMP/MKL: the trial's CPUs, not the machine's
    resume = resume or tune.get_checkpoint() is not None  # a retried trial has its marker checkpoint
    start = first_unfinished_step(cfg, stream, run, chain) if resume else 1
    if start > cfg.prune.steps:
        return {"step": cfg.prune.steps, "started_at_step": start, "done": True, "skipped": True}
    seed = cfg.run_seed(run)
    data = stream_data(cfg, seed)
    loaders = make_loaders(cfg, stream, data, seed, val=False)  # fine-tuning validates nothing (below)

    def report(row: dict) -> None:
        with tempfile.TemporaryDirectory() as folder:  # the marker that tells a retry to resume
            Path(folder, "step.txt").write_text(str(row["step"]))
            tune.report({"step": row["step"], "started_at_step": start, "video_accuracy": row["video_accuracy"],
                         **{k: row.get(k) for k in STEP_METRICS}}, checkpoint=tune.Checkpoint.from_directory(folder))
        if after_step is not None:
            after_step(row)

    def report_epoch(metrics: dict) -> None:  # per fine-tuning epoch, no checkpoint
        tune.report({"started_at_step": start, **metrics})
        print(f"{stream} run{run} {chain} step {metrics['step']} epoch {metrics['epoch']}: "
              + " ".join(f"{k}={v:.4g}" for k, v in metrics.items()
                         if k not in ("step", "epoch") and v is not None), flush=True)

    train_eval = train_eval_loader(cfg, stream, data) if wants_train_scores(cfg) else None
    light = light_test_loader(cfg, stream, data)
    # no validation while fine-tuning: nothing reads it (no early stopping, no selection; the
    # training-curve figure shows step 0), and it was ≈ 10 % of the paper config's GPU time
    rows = run_chain(cfg, stream, run, ChainLoaders(loaders["train"], None, loaders["test"], train_eval,
                                                    light),
                     resume=resume, on_step=report, on_epoch=report_epoch, chain=chain)
    return {"step": rows[-1]["step"], "started_at_step": start, "video_accuracy": rows[-1]["video_accuracy"],
            "flops_removed": rows[-1]["flops_removed"], "done": True}


def prune_trial(params: dict, experiment: dict, resume: bool = False) -> None:
    """The Tune function trainable: ``params`` = {stream, run, chain}; ``experiment`` the config dict."""
    cfg = ExperimentConfig.from_dict(experiment)
    # always from the first unfinished step: a plain rerun resumes too (the sweep's config
    # check guarantees the finished steps came from this config); Tune state from before chains
    # has no chain parameter: the study's
    tune.report(run_prune_trial(cfg, params["stream"], params["run"], resume=True,
                                chain=params.get("chain", STUDY_CHAIN)))


def run_prune_stage(cfg: ExperimentConfig, ctx) -> None:
    """Prune every (stream, run) chain on Ray Tune; raise if any trial failed for good."""
    if not cfg.prune.enabled:
        print("prune: disabled in the config (prune.enabled: false)")
        return
    results = make_tuner(cfg, resume=ctx.resume, trainable=prune_trial, name="prune", chains=cfg.prune.chains).fit()
    if ctx.resume and unfinished_cells(cfg, lambda c, s, r: all(first_unfinished_step(c, s, r, chain) > c.prune.steps
                                                                for chain in c.prune.chains)):
        # pipeline.tune.unfinished_cells: restored Tune state skips trials it saw finish
        results = make_tuner(cfg, trainable=prune_trial, name="prune", chains=cfg.prune.chains).fit()
    failed = [(r.path, r.error) for r in results if r.error is not None]
    if failed:
        raise RuntimeError(f"{len(failed)} pruning trial(s) failed: " +
                           "; ".join(f"{path}: {error}" for path, error in failed))
