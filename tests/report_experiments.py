"""Experiments written through the results store, no training, for figure and report tests: a
small one (2 streams + fusion, 3 runs, 4 steps, γ histograms, epochs, saved maps) and one at the
paper's size (17 steps of 4 %, 5 runs, explained at 0 / 6 / 7 / 14, optionally the controls)."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from core.results import write_rows
from pruning.slimming import GAMMA_BINS


STREAMS = ("spatial", "temporal")


STEPS = (0, 1, 2, 3)


RUNS = (1, 2, 3)


FIGURE_VIDEO = "v_Archery_g01_c01"


T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def gamma_rows(stream: str, run: int, step: int, phase: str, centre: float, threshold: float | None,
               n: int = 200) -> list[dict]:
    """A `gammas` histogram of n log-normal |γ| around ``centre`` (the table's own bins)."""
    low, high, bins = GAMMA_BINS
    edges = np.logspace(np.log10(low), np.log10(high), bins + 1)
    values = np.clip(np.exp(np.random.default_rng(run + 10 * step).normal(np.log(centre), 1.0, n)), low, high)
    counts, _ = np.histogram(values, edges)
    return [dict(experiment="demo", stream=stream, run=run, step=step, phase=phase, residual=False, bin=i,
                 bin_low=float(edges[i]), bin_high=float(edges[i + 1]), count=int(counts[i]), threshold=threshold)
            for i in np.flatnonzero(counts)]  # the table keeps non-empty bins only


def build_experiment(root: Path, *, latency: bool = True, epochs: bool = True, irof: bool = True,
                     maps: bool = True, gammas: bool = True) -> Path:
    """A small synthetic experiment written through the results store, with saved maps."""
    rng = np.random.default_rng(0)
    results = root / "results"
    for stream in STREAMS + ("fusion",):
        for run in RUNS:
            for step in STEPS:
                if stream == "temporal" and run == 3 and step == 3:
                    continue  # a run that never finished: n drops to 2
                fusions = ("mean", "svm_softmax") if stream == "fusion" else (None,)
                rows = [dict(experiment="demo", stream=stream, fusion=f, run=run, seed=run, step=step,
                             prune_ratio=0.04 * step, channels_removed=0.04 * step,
                             params_removed=0.07 * step, flops_removed=0.05 * step, split=1,
                             clip_accuracy=float(50 - step + rng.normal()),
                             video_accuracy=float(60 - 2 * step + 2 * rng.normal()),
                             video_top5=90.0, loss=1.0, n_videos=12,
                             latency_ms=float(10 - step) if latency and f is None else None,
                             threshold=0.01 * step if step and f is None else None,
                             finished_at=T0) for f in fusions]
                write_rows(results, "accuracy", rows, partition=f"{stream}/run{run}/step{step}")
                if irof and stream != "fusion":
                    write_rows(results, "irof", [
                        dict(experiment="demo", stream=stream, run=run, step=step, prune_ratio=0.04 * step,
                             video=video, clip=0, label=0, target=0, predicted=0, method="vanilla_gradient",
                             irof=float(0.5 - 0.02 * step + 0.05 * rng.normal()), n_segments=20, seconds=0.1)
                        for video in (FIGURE_VIDEO, "v_Bowling_g02_c03")],
                        partition=f"{stream}/run{run}/step{step}")
    if gammas:  # |γ| before training, after (sparsity) training, after each step's fine-tuning
        for stream in STREAMS:
            for run in RUNS:
                write_rows(results, "gammas", gamma_rows(stream, run, 0, "initial", 1.0, None)
                           + gamma_rows(stream, run, 0, "trained", 0.1, None)
                           + [row for step in STEPS[1:]
                              for row in gamma_rows(stream, run, step, "finetuned", 0.1, 0.01 * step, 200 - 8 * step)],
                           partition=f"{stream}/run{run}")
    if epochs:
        write_rows(results, "epochs", [
            dict(experiment="demo", stream=stream, run=run, step=0, epoch=epoch, phase=phase,
                 loss=2.0 / epoch, accuracy=20.0 * epoch, lr=0.01, seconds=1.0)
            for stream in STREAMS for run in (1, 2) for epoch in (1, 2, 3) for phase in ("train", "val")],
            partition="training")
    if maps:
        for stream in STREAMS:
            for step in STEPS:
                path = root / "saliency" / stream / "run1" / f"step{step}" / f"{FIGURE_VIDEO}__000.npz"
                path.parent.mkdir(parents=True, exist_ok=True)
                extra = {"pairs": rng.random((10, 16, 16), dtype=np.float32)} if stream == "temporal" else {}
                np.savez(path, rgb=rng.integers(0, 255, (16, 16, 3), dtype=np.uint8),
                         saliency=rng.random((16, 16), dtype=np.float32) * (step + 1),
                         prune_ratio=np.float64(0.04 * step), label=0, target=0, predicted=0, **extra)
    (root / "experiment.json").write_text(json.dumps({
        "config": {"experiment": {"name": "demo"}, "explain": {"figure_videos": [FIGURE_VIDEO]}},
        "code_version": "0123abc", "started_at": T0.isoformat()}))
    return root


# the paper's grid: 17 steps of 4 % (18 evaluated models per run), explained at 0 / 6 / 7 / 14
PAPER_STEPS, PAPER_RUNS, EXPLAINED = range(18), range(1, 6), (0, 6, 7, 14)
FUSIONS = ("mean", "svm_softmax", "svm_features")


def paper_size_experiment(root: Path, name: str = "paper", steps=PAPER_STEPS, explained=EXPLAINED,
                          controls: bool = False) -> Path:
    """2 streams x 3 fusions x 5 runs x 18 steps of accuracy, IROF at 4 explained steps; the
    single streams' random and finetune_only chains at the explained steps."""
    rng = np.random.default_rng(0)
    models = [("spatial", None), ("temporal", None)] + [("fusion", f) for f in FUSIONS]
    for stream, fusion in models:
        for run in PAPER_RUNS:
            rows = []
            for step in steps:
                ratio = 1 - 0.96 ** step
                acc = 80 - 30 * ratio ** 2 + rng.normal(0, 1)
                rows.append(dict(experiment=name, stream=stream, fusion=fusion, run=run, seed=run,
                                 step=step, prune_ratio=ratio, channels_removed=ratio,
                                 params_removed=ratio * 0.9, flops_removed=ratio * 0.8, split=1,
                                 clip_accuracy=acc - 3, video_accuracy=acc, video_top5=acc + 10,
                                 loss=1 + ratio, n_videos=3783, latency_ms=5 - 3 * ratio,
                                 throughput_cps=400 / (1 - 0.6 * ratio), device="cpu",
                                 finished_at=datetime.now(timezone.utc)))
            write_rows(root / "results", "accuracy", rows, partition=f"{stream}/{fusion}/run{run}")
            if fusion is None and controls:  # issue 27's controls, tested at the explained steps
                write_rows(root / "results", "accuracy",
                           [{**r, "chain": "random", "video_accuracy": r["video_accuracy"] - 5 * r["prune_ratio"]}
                            for r in rows if 0 < r["step"] and r["step"] in explained]
                           + [{**r, "chain": "finetune_only", "prune_ratio": 0.0, "channels_removed": 0.0}
                              for r in rows if 0 < r["step"] and r["step"] in explained],
                           partition=f"controls/{stream}/run{run}")
    for stream in ("spatial", "temporal"):
        for run in PAPER_RUNS:
            rows = [dict(experiment=name, stream=stream, run=run, step=step,
                         prune_ratio=1 - 0.96 ** step, video=f"v_{cls}_g01_c01", clip=0, label=0,
                         target=0, predicted=0, method="saliency",
                         irof=float(rng.normal(0.3 - 0.01 * step, 0.02)), n_segments=50, seconds=1.0)
                    for step in explained for cls in ("Archery", "Bowling")]
            write_rows(root / "results", "irof", rows, partition=f"{stream}/run{run}")
            if controls:
                write_rows(root / "results", "irof", [{**r, "chain": chain, "irof": r["irof"] - shift}
                                                      for chain, shift in (("random", 0.05), ("finetune_only", 0.0))
                                                      for r in rows if r["step"] > 0],
                           partition=f"controls/{stream}/run{run}")
    return root
