"""The sweep's explain stage: vanilla-gradient saliency, IROF and the change of the saliency
maps under pruning, for every (stream, run, step).

One Ray task per (stream, run, step, chain) checkpoint (``prune.chains``: slimming at
``explain.steps``, each control at its tested steps, ``core.config.tested_steps``): it reads the chosen test clips through the
DALI eval pipeline, explains each clip's target class (``explain.target``: the model's own
prediction, default, or the true label; ``explanations.saliency``), scores the explanation with
IROF (``explanations.irof``) and, for a pruned step k > 0, compares each map with the unpruned
(step 0) model's map of the same clip (``explanations.saliency_change``): for the class each model
explains, and for the unpruned model's class (``*_same``: both maps explain the same class),
with whether the prediction changed. A step-0 task of run r ≥ 2 compares run r's unpruned maps
with run r − 1's (``base_run``): how different two trainings of one model are, the reference
band. Beside each clip's IROF it scores a seeded random order of the same segments
(``irof_random``, the clip's chance level). It keeps the maps of
the figure videos as ``saliency/<stream>/run<r>/step<k>/<video>__<clip:03d>.npz``, writes
``results/saliency_change/<stream>/run<r>/step<k>.parquet`` (k > 0) and finally its ``irof``
rows as ``results/irof/<stream>/run<r>/step<k>.parquet``.
With ``explain.methods`` × ``explain.metrics`` (issue 30, ``explanations.grid``) it also writes the
``faithfulness`` rows of the task (the study's pair reused), before the irof rows.

Stale or done: every row and map records ``explain_hash`` (the config that decides an
explanation beyond the model: ``data``, ``model``, ``loader`` and ``explain`` but its
``steps``/``enabled``) and the SHA-256 of the checkpoint it came from (and, for
``saliency_change``, of the step-0 checkpoint). A task is done when all of its files exist
and record today's hash and checkpoints; anything else (a retrained or re-pruned model, other
explain settings, a file of an older version) is explained again. File times play no part.

Clips: ``explain.max_videos`` test videos (null = all) spread evenly over the classes, plus
every ``explain.figure_videos``; of each, ``explain.clips_per_video`` clips at the centres of
equal parts of the video's test clips (one clip = the middle one).
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import time
import zlib
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import ray
import torch

from explanations.grid import TABLE as GRID_TABLE
from explanations.grid import StudyPair, grid_scores, randomisation_subset
from explanations.irof import irof
from explanations.segments import cached_segments
from core.atomic import atomic_file
from core.results import model_partition, table_path, write_rows
from explanations.saliency import flow_pair_maps, input_gradient, reduce_channels
from explanations.saliency_change import TOP_FRACTION, spearman, top_iou
from shards.dali import IMAGENET_MEAN, IMAGENET_STD, make_loader
from shards.format import sample_key
from core.progress import progress
from core.threads import pin_threads
from training.checkpoint import load_checkpoint
from core.config import STREAMS, STUDY_CHAIN, ExperimentConfig, tested_steps
from training.data import class_names, loader_config, read_manifest
from training.evaluate import resolve_device
from core.resources import trial_resources

TABLE = "irof"
CHANGE_TABLE = "saliency_change"
# explain settings that choose what runs or how fast, not what an explanation is: the IROF
# forward batch leaves CPU scores bit-identical (batches padded to multiples of 8, see
# explanations.irof) and may change GPU scores only in float rounding
NOT_IN_EXPLAIN_HASH = ("steps", "enabled", "forward_batch")


class ExplainError(ValueError):
    """An explain configuration that does not fit the experiment's files."""


def explain_steps(cfg: ExperimentConfig) -> list[int]:
    if cfg.explain.steps == "all":
        return list(range((cfg.prune.steps if cfg.prune.enabled else 0) + 1))
    return sorted(set(cfg.explain.steps))


def explain_tasks(cfg: ExperimentConfig) -> list[tuple[str, int, int, str]]:
    """(stream, run, step, chain): the study's explained steps, then each control chain's."""
    runs = range(1, cfg.train.runs + 1)
    tasks = [(*t, STUDY_CHAIN) for t in itertools.product(STREAMS, runs, explain_steps(cfg))]
    if cfg.prune.enabled:
        tasks += [(stream, run, step, chain) for chain in cfg.prune.chains if chain != STUDY_CHAIN
                  for stream, run in itertools.product(STREAMS, runs) for step in tested_steps(cfg, chain)]
    return tasks


def base_of(run: int, step: int) -> int | None:
    """The run whose step-0 model a map is compared with: this run's for a pruned step, the
    previous run's for an unpruned one (the run-to-run reference), none for run 1's step 0."""
    return run if step > 0 else (run - 1 if run > 1 else None)


def clip_seed(cfg: ExperimentConfig, video: str, clip: int) -> int:
    """The seed of a clip's random segment order: the same for every model of the clip."""
    return int(np.random.SeedSequence([cfg.experiment.seed, zlib.crc32(video.encode()), clip]).generate_state(1)[0])


def method_name(reduce: str) -> str:
    return f"vanilla_gradient_{reduce}"


def explain_hash(cfg: ExperimentConfig) -> str:
    """16-hex fingerprint of the config that decides an explanation beyond its checkpoint."""
    explain = {k: v for k, v in dataclasses.asdict(cfg.explain).items() if k not in NOT_IN_EXPLAIN_HASH}
    decides = {"experiment": cfg.experiment.name, "data": dataclasses.asdict(cfg.data),
               "model": dataclasses.asdict(cfg.model), "loader": dataclasses.asdict(cfg.loader),
               "explain": explain}
    return hashlib.sha256(json.dumps(decides, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _recorded(path: Path, columns: tuple[str, ...]) -> set[tuple] | None:
    """The distinct values of ``columns`` in one results file; None if it lacks one of them."""
    if not path.is_file():
        return None
    if not set(columns) <= set(pq.read_schema(path).names):
        return None  # written before these columns existed
    table = pq.read_table(path, columns=list(columns))
    return set(zip(*(table.column(c).to_pylist() for c in columns)))


def _map_recorded(path: Path) -> tuple | None:
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as npz:
        if "explain_hash" not in npz or "checkpoint_sha256" not in npz:
            return None
        return str(npz["explain_hash"]), str(npz["checkpoint_sha256"])


def figure_map_path(cfg: ExperimentConfig, stream: str, run: int, step: int, video: str, clip: int,
                    chain: str = STUDY_CHAIN) -> Path:
    return cfg.paths.saliency / model_partition(stream, run, step, chain) / f"{sample_key(video, clip)}.npz"


def is_done(cfg: ExperimentConfig, stream: str, run: int, step: int, chain: str = STUDY_CHAIN, *,
            figure_clips: list[tuple[str, int]] = (), digests: dict | None = None) -> bool:
    """True when the task's rows (and maps of ``figure_clips``) all exist and record today's
    ``explain_hash`` and checkpoint digests. ``digests`` caches checkpoint path → SHA-256."""
    digests = {} if digests is None else digests

    def digest(path: Path) -> str | None:
        if path not in digests:
            digests[path] = file_sha256(path) if path.is_file() else None
        return digests[path]

    rows = table_path(cfg.paths.results, TABLE, model_partition(stream, run, step, chain))
    if not rows.is_file():  # never explained: nothing to hash
        return False
    want = (explain_hash(cfg), digest(cfg.paths.checkpoint(stream, run, step, chain)))
    # rows before irof_random (schema < 4) are explained again
    if want[1] is None or _recorded(rows, ("explain_hash", "checkpoint_sha256", "irof_random")) is None \
            or _recorded(rows, ("explain_hash", "checkpoint_sha256")) != {want}:
        return False
    grid = table_path(cfg.paths.results, GRID_TABLE, model_partition(stream, run, step, chain))
    if _recorded(grid, ("explain_hash", "checkpoint_sha256")) != {want}:  # methods, metrics: in the hash
        return False
    base_run = base_of(run, step)
    if base_run is not None:
        change = table_path(cfg.paths.results, CHANGE_TABLE, model_partition(stream, run, step, chain))
        base = digest(cfg.paths.checkpoint(stream, base_run, 0))
        if _recorded(change, ("explain_hash", "checkpoint_sha256", "base_checkpoint_sha256")) != {(*want, base)}:
            return False
    return all(_map_recorded(figure_map_path(cfg, stream, run, step, v, c, chain)) == want for v, c in figure_clips)


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


@dataclasses.dataclass
class Explained:
    """One checkpoint's results: ``irof`` rows and, for a pruned step, ``saliency_change`` rows."""
    irof: list[dict]
    change: list[dict]
    faithfulness: list[dict] = dataclasses.field(default_factory=list)  # explanations.grid


def load_explained_model(cfg: ExperimentConfig, stream: str, run: int, step: int, classes, device,
                         chain: str = STUDY_CHAIN):
    """(model in eval mode, prune ratio, checkpoint SHA-256) of one checkpoint."""
    path = cfg.paths.checkpoint(stream, run, step, chain)
    checkpoint = load_checkpoint(path, classes=classes, map_location=device)
    prune_ratio = checkpoint.extra.get("prune_ratio", 0.0 if step == 0 else None)
    if prune_ratio is None:
        raise ExplainError(f"{path}: a pruned checkpoint without 'prune_ratio' in its extra data")
    return checkpoint.model.eval(), float(prune_ratio), file_sha256(path)


def target_of(rule: str, labels: torch.Tensor):
    """What ``explanations.saliency.input_gradient`` explains under ``explain.target``."""
    return labels if rule == "label" else "predicted"


def explain_model(cfg: ExperimentConfig, stream: str, run: int, step: int, chain: str = STUDY_CHAIN, *,
                  device: str | torch.device = "auto") -> Explained:
    """Explain the chosen test clips with one checkpoint; save figure maps; return the rows."""
    device = resolve_device(device)
    paths, ex = cfg.paths, cfg.explain
    manifest = read_manifest(paths.shards)
    classes = class_names(manifest)
    model, prune_ratio, sha = load_explained_model(cfg, stream, run, step, classes, device, chain)
    base_run = base_of(run, step)
    base = None if base_run is None else load_explained_model(cfg, stream, base_run, 0, classes, device)
    provenance = dict(explain_hash=explain_hash(cfg), checkpoint_sha256=sha)

    wanted = select_clips(cfg, manifest)
    shards = [paths.shards / s for s in sorted(manifest.filter(pl.col("video").is_in(list(wanted)))["shard"].unique())]
    figure_keys = {(v, c) for v in ex.figure_videos for c in wanted[v]}
    frames = figure_frames(cfg, shards, figure_keys)
    lcfg = dataclasses.replace(loader_config(cfg, stream, train=False), ten_crop=False, dtype="float32",
                               batch_size=ex.batch_size)
    keys = dict(experiment=cfg.experiment.name, stream=stream, run=run, step=step, prune_ratio=prune_ratio,
                chain=chain)
    rows, changes, grid = [], [], []
    randomised = randomisation_subset(cfg, wanted)
    for batch in progress(make_loader(shards, lcfg), desc=f"explain {model_partition(stream, run, step, chain)}",
                          leave=False):
        keep = wanted_rows(batch, wanted)
        if not keep:
            continue
        x = batch["x"][keep].to(device)
        labels = batch["label"][keep].to(device)
        start = time.perf_counter()
        grad, logits, target = input_gradient(model, x, target_of(ex.target, labels))
        maps = reduce_channels(grad, ex.reduce)
        # one segmentation for both orders, every method and (cached) every model of the clip
        segments = cached_segments(paths.root / "segments" / stream,
                                   [(batch["video"][row], int(batch["clip"][row])) for row in keep],
                                   x.detach().cpu().numpy())
        scores = irof(model, x, maps, target, segments=segments, baseline=ex.baseline, batch_size=ex.forward_batch)
        seconds = (time.perf_counter() - start) / len(keep)
        clip_ids = [(batch["video"][row], int(batch["clip"][row])) for row in keep]
        chance = irof(model, x, maps, target, segments=segments, baseline=ex.baseline, batch_size=ex.forward_batch,
                      random_seeds=[clip_seed(cfg, video, clip) for video, clip in clip_ids])
        label_list, target_list, predicted = labels.tolist(), target.tolist(), logits.argmax(1).tolist()
        grid_columns = grid_scores(cfg, model, x, clip_ids, StudyPair(maps, target, scores.score, chance.score,
                                                                     segments), randomised)
        if base is not None:  # the base model's maps of the same clips, same rule and reduction
            base_grad, base_logits, base_target = input_gradient(base[0], x, target_of(ex.target, labels))
            base_maps = reduce_channels(base_grad, ex.reduce)
            rho, iou = spearman(base_maps, maps), top_iou(base_maps, maps)
            # this model's map of the base model's class: both maps explain the same class
            same_maps = maps if ex.target == "label" else \
                reduce_channels(input_gradient(model, x, base_target)[0], ex.reduce)
            rho_same, iou_same = spearman(base_maps, same_maps), top_iou(base_maps, same_maps)
            base_predicted = base_logits.argmax(1).tolist()
        for i, row in enumerate(keep):
            video, clip = clip_ids[i]
            clip_keys = dict(keys, video=video, clip=clip, method=method_name(ex.reduce), target_rule=ex.target)
            rows.append(dict(clip_keys, label=label_list[i], target=target_list[i], predicted=predicted[i],
                             correct=predicted[i] == label_list[i], irof=float(scores.score[i]),
                             irof_random=float(chance.score[i]),
                             n_segments=int(scores.n_segments[i]), seconds=seconds, **provenance))
            grid += [dict(keys, video=video, clip=clip, target_rule=ex.target, label=label_list[i],
                          target=target_list[i], predicted=predicted[i], correct=predicted[i] == label_list[i],
                          **columns, **provenance) for columns in grid_columns[i]]
            if base is not None:
                changes.append(dict(clip_keys, target=target_list[i], base_target=int(base_target[i]),
                                    base_run=None if base_run == run else base_run,
                                    spearman=None if np.isnan(rho[i]) else float(rho[i]),
                                    iou_top=float(iou[i]), top_fraction=TOP_FRACTION,
                                    spearman_same=None if np.isnan(rho_same[i]) else float(rho_same[i]),
                                    iou_top_same=float(iou_same[i]),
                                    prediction_changed=predicted[i] != base_predicted[i],
                                    base_checkpoint_sha256=base[2], **provenance))
            if (video, clip) in figure_keys:
                extra = {"pairs": flow_pair_maps(grad[i:i + 1], ex.reduce)[0].cpu().numpy()} \
                    if stream == "temporal" else {}
                save_maps(figure_map_path(cfg, stream, run, step, video, clip, chain),
                          rgb=frames[(video, clip)], saliency=maps[i].cpu().numpy().astype(np.float32),
                          prune_ratio=np.float64(prune_ratio), label=np.int64(label_list[i]),
                          target=np.int64(target_list[i]), predicted=np.int64(predicted[i]),
                          target_rule=np.str_(ex.target), **{k: np.str_(v) for k, v in provenance.items()},
                          **extra)
    missing = sum(len(c) for c in wanted.values()) - len(rows)
    if missing:
        raise ExplainError(f"{paths.shards}: {missing} chosen test clips were not in the shards")
    return Explained(rows, changes, sorted(grid, key=lambda r: (r["method"], r["metric"])))


def figure_clips(cfg: ExperimentConfig, wanted: dict[str, list[int]]) -> list[tuple[str, int]]:
    return [(v, c) for v in cfg.explain.figure_videos for c in wanted.get(v, ())]


def explain_task(experiment: dict, stream: str, run: int, step: int, chain: str = STUDY_CHAIN) -> int:
    """One Ray task: explain one checkpoint and write its rows (the irof rows last: done)."""
    cfg = ExperimentConfig.from_dict(experiment)
    pin_threads(cfg.ray.cpus_per_trial)  # torch, OpenCV, OpenMP/MKL: the trial's CPUs, not the machine's
    explained = explain_model(cfg, stream, run, step, chain)
    where = model_partition(stream, run, step, chain)
    if explained.change:
        write_rows(cfg.paths.results, CHANGE_TABLE, explained.change, partition=where)
    if explained.faithfulness:
        write_rows(cfg.paths.results, GRID_TABLE, explained.faithfulness, partition=where)
    write_rows(cfg.paths.results, TABLE, explained.irof, partition=where)
    return len(explained.irof)


def tasks_to_do(cfg: ExperimentConfig) -> list[tuple[str, int, int, str]]:
    """The configured (stream, run, step, chain) tasks that are not done (see ``is_done``)."""
    clips = figure_clips(cfg, select_clips(cfg, read_manifest(cfg.paths.shards))) if cfg.explain.figure_videos else []
    digests: dict = {}
    return [t for t in explain_tasks(cfg) if not is_done(cfg, *t, figure_clips=clips, digests=digests)]


def run_explain_stage(cfg: ExperimentConfig, ctx) -> None:
    """Explain every configured (stream, run, step) on Ray; raise if any task failed for good."""
    if not cfg.explain.enabled:
        print("explain: disabled in the config (explain.enabled: false)")
        return
    tasks = explain_tasks(cfg)
    needed = dict.fromkeys(cfg.paths.checkpoint(*t) for t in tasks)  # with the base models compared
    needed |= dict.fromkeys(cfg.paths.checkpoint(s, base_of(r, k), 0) for s, r, k, _ in tasks
                            if base_of(r, k) is not None)
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise ExplainError(f"explain: {len(missing)} checkpoint(s) missing (train and prune first, or "
                           f"choose explain.steps): {missing[:4]}")
    todo = tasks_to_do(cfg)
    print(f"explain: {len(tasks) - len(todo)} of {len(tasks)} (stream, run, step, chain) already done "
          "(same explain settings and checkpoints)")
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
                failed.append(f"{model_partition(*task)}: {exc}")
            bar.update()
    if failed:
        raise RuntimeError(f"explain: {len(failed)} task(s) failed: " + "; ".join(failed))
