"""The sweep's explain stage: vanilla-gradient saliency and IROF for every (stream, run, step).

One Ray task per (stream, run, step) checkpoint: it reads the chosen test clips through the
DALI eval pipeline, explains each clip's true class (``analysis.saliency``), scores the
explanation with IROF (``analysis.irof``), keeps the maps of the figure videos as
``saliency/<stream>/run<r>/step<k>/<video>__<clip:03d>.npz`` and finally writes its ``irof``
rows as ``results/irof/<stream>/run<r>/step<k>.parquet``. That file, written last, marks the
task done: a task whose file is newer than its checkpoint is skipped, so an interrupted
stage resumes where it stopped and a retrained or re-pruned model is explained again.

Clips: ``explain.max_videos`` test videos (null = all) spread evenly over the classes, plus
every ``explain.figure_videos``; of each, ``explain.clips_per_video`` clips at the centres of
equal parts of the video's test clips (one clip = the middle one).
"""
from __future__ import annotations

import dataclasses
import itertools
import time
from pathlib import Path

import numpy as np
import polars as pl
import ray
import torch

from analysis.irof import irof
from analysis.results import atomic_file, table_path, write_rows
from analysis.saliency import flow_pair_maps, input_gradient, reduce_channels
from shards.dali import IMAGENET_MEAN, IMAGENET_STD, make_loader
from shards.format import sample_key
from shards.progress import progress
from training.checkpoint import load_checkpoint
from training.config import STREAMS, ExperimentConfig
from training.data import class_names, loader_config, read_manifest
from training.evaluate import resolve_device
from training.tune import trial_resources

TABLE = "irof"


class ExplainError(ValueError):
    """An explain configuration that does not fit the experiment's files."""


def explain_steps(cfg: ExperimentConfig) -> list[int]:
    if cfg.explain.steps == "all":
        return list(range((cfg.prune.steps if cfg.prune.enabled else 0) + 1))
    return sorted(set(cfg.explain.steps))


def explain_tasks(cfg: ExperimentConfig) -> list[tuple[str, int, int]]:
    return list(itertools.product(STREAMS, range(1, cfg.train.runs + 1), explain_steps(cfg)))


def partition(stream: str, run: int, step: int) -> str:
    return f"{stream}/run{run}/step{step}"


def method_name(reduce: str) -> str:
    return f"vanilla_gradient_{reduce}"


def is_done(cfg: ExperimentConfig, stream: str, run: int, step: int) -> bool:
    rows = table_path(cfg.paths.results, TABLE, partition(stream, run, step))
    checkpoint = cfg.paths.checkpoint(stream, run, step)
    return rows.is_file() and checkpoint.is_file() and rows.stat().st_mtime >= checkpoint.stat().st_mtime


def centre_clips(clips: int, k: int) -> list[int]:
    """``k`` clip indices at the centres of ``k`` equal parts of ``range(clips)``."""
    k = min(k, clips)
    return [int((i + 0.5) * clips / k) for i in range(k)]


def select_clips(cfg: ExperimentConfig, manifest: pl.DataFrame) -> dict[str, list[int]]:
    """Test video → clip indices to explain."""
    test = manifest.filter(pl.col("subset") == "test").sort("label", "video")
    unknown = sorted(set(cfg.explain.figure_videos) - set(test["video"]))
    if unknown:
        raise ExplainError(f"explain.figure_videos {unknown} are not test videos of "
                           f"{cfg.paths.shards} (e.g. {test['video'][:3].to_list()})")
    # round robin over the classes: the i-th video of every class before any (i+1)-th
    spread = test.with_columns(pl.int_range(pl.len()).over("label").alias("rank")).sort("rank", "label")
    chosen = spread if cfg.explain.max_videos is None else spread.head(cfg.explain.max_videos)
    chosen = pl.concat([chosen, test.filter(pl.col("video").is_in(cfg.explain.figure_videos))],
                       how="diagonal").unique("video", keep="first", maintain_order=True)
    return {video: centre_clips(clips, cfg.explain.clips_per_video)
            for video, clips in chosen.select("video", "clips").iter_rows()}


def wanted_rows(batch: dict, wanted: dict[str, list[int]]) -> list[int]:
    return [i for i, (video, clip) in enumerate(zip(batch["video"], batch["clip"].tolist()))
            if clip in wanted.get(video, ())]


def figure_frames(cfg: ExperimentConfig, shards: list[Path], keys: set[tuple[str, int]]) -> dict:
    """(video, clip) → the centre frame as the models see it (the eval crop), uint8 (H, W, 3),
    read through the spatial eval pipeline and un-normalised."""
    frames = {}
    if not keys:
        return frames
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None] * 255
    std = torch.tensor(IMAGENET_STD)[:, None, None] * 255
    lcfg = dataclasses.replace(loader_config(cfg, "spatial", train=False), ten_crop=False, dtype="float32")
    for batch in make_loader(shards, lcfg):
        for i, key in enumerate(zip(batch["video"], batch["clip"].tolist())):
            if key in keys:
                rgb = (batch["x"][i].cpu() * std + mean).round().clamp(0, 255).to(torch.uint8)
                frames[key] = rgb.permute(1, 2, 0).numpy()
    return frames


def save_maps(path: Path, **arrays) -> None:
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def explain_model(cfg: ExperimentConfig, stream: str, run: int, step: int, *,
                  device: str | torch.device = "auto") -> list[dict]:
    """Explain the chosen test clips with one checkpoint; save figure maps; return the rows."""
    device = resolve_device(device)
    paths, ex = cfg.paths, cfg.explain
    manifest = read_manifest(paths.shards)
    checkpoint_path = paths.checkpoint(stream, run, step)
    checkpoint = load_checkpoint(checkpoint_path, classes=class_names(manifest), map_location=device)
    prune_ratio = checkpoint.extra.get("prune_ratio", 0.0 if step == 0 else None)
    if prune_ratio is None:
        raise ExplainError(f"{checkpoint_path}: a pruned checkpoint without 'prune_ratio' in its extra data")
    model = checkpoint.model.eval()

    wanted = select_clips(cfg, manifest)
    shards = [paths.shards / s for s in sorted(manifest.filter(pl.col("video").is_in(list(wanted)))["shard"].unique())]
    figure_keys = {(v, c) for v in ex.figure_videos for c in wanted[v]}
    frames = figure_frames(cfg, shards, figure_keys)
    lcfg = dataclasses.replace(loader_config(cfg, stream, train=False), ten_crop=False, dtype="float32",
                               batch_size=ex.batch_size)
    rows = []
    for batch in progress(make_loader(shards, lcfg), desc=f"explain {partition(stream, run, step)}",
                          leave=False):
        keep = wanted_rows(batch, wanted)
        if not keep:
            continue
        x = batch["x"][keep].to(device)
        labels = batch["label"][keep].to(device)
        start = time.perf_counter()
        grad, logits, target = input_gradient(model, x, labels)
        maps = reduce_channels(grad, ex.reduce)
        scores = irof(model, x, maps, target, baseline=ex.baseline, batch_size=ex.forward_batch)
        seconds = (time.perf_counter() - start) / len(keep)
        label_list, target_list, predicted = labels.tolist(), target.tolist(), logits.argmax(1).tolist()
        for i, row in enumerate(keep):
            video, clip = batch["video"][row], int(batch["clip"][row])
            rows.append(dict(experiment=cfg.experiment.name, stream=stream, run=run, step=step,
                             prune_ratio=float(prune_ratio), video=video, clip=clip,
                             label=label_list[i], target=target_list[i], predicted=predicted[i],
                             method=method_name(ex.reduce), irof=float(scores.score[i]),
                             n_segments=int(scores.n_segments[i]), seconds=seconds))
            if (video, clip) in figure_keys:
                extra = {"pairs": flow_pair_maps(grad[i:i + 1], ex.reduce)[0].cpu().numpy()} \
                    if stream == "temporal" else {}
                save_maps(paths.saliency / partition(stream, run, step) / f"{sample_key(video, clip)}.npz",
                          rgb=frames[(video, clip)], saliency=maps[i].cpu().numpy().astype(np.float32),
                          prune_ratio=np.float64(prune_ratio), label=np.int64(label_list[i]),
                          target=np.int64(target_list[i]), predicted=np.int64(predicted[i]), **extra)
    missing = sum(len(c) for c in wanted.values()) - len(rows)
    if missing:
        raise ExplainError(f"{paths.shards}: {missing} chosen test clips were not in the shards")
    return rows


def explain_task(experiment: dict, stream: str, run: int, step: int) -> int:
    """One Ray task: explain one checkpoint and write its rows (last, marking it done)."""
    cfg = ExperimentConfig.from_dict(experiment)
    torch.set_num_threads(max(1, int(cfg.ray.cpus_per_trial)))
    rows = explain_model(cfg, stream, run, step)
    write_rows(cfg.paths.results, TABLE, rows, partition=partition(stream, run, step))
    return len(rows)


def run_explain_stage(cfg: ExperimentConfig, ctx) -> None:
    """Explain every configured (stream, run, step) on Ray; raise if any task failed for good."""
    if not cfg.explain.enabled:
        print("explain: disabled in the config (explain.enabled: false)")
        return
    tasks = explain_tasks(cfg)
    missing = [str(cfg.paths.checkpoint(*t)) for t in tasks if not cfg.paths.checkpoint(*t).is_file()]
    if missing:
        raise ExplainError(f"explain: {len(missing)} checkpoint(s) missing (train and prune first, or "
                           f"choose explain.steps): {missing[:4]}")
    todo = [t for t in tasks if not is_done(cfg, *t)]
    print(f"explain: {len(tasks) - len(todo)} of {len(tasks)} (stream, run, step) already done")
    resources = trial_resources(cfg)
    remote = ray.remote(explain_task).options(num_cpus=resources["cpu"], num_gpus=resources["gpu"],
                                              max_retries=cfg.ray.max_failures)
    pending = {remote.remote(cfg.to_dict(), *t): t for t in todo}
    failed = []
    with progress(total=len(todo), desc="explain") as bar:
        while pending:
            (ready,), _ = ray.wait(list(pending), num_returns=1)
            task = pending.pop(ready)
            try:
                ray.get(ready)
            except Exception as exc:  # keep the other tasks' results; report all failures at the end
                failed.append(f"{partition(*task)}: {exc}")
            bar.update()
    if failed:
        raise RuntimeError(f"explain: {len(failed)} task(s) failed: " + "; ".join(failed))
