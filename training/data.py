"""From a split folder of shards to the loaders of one stream: train, val, test, train-eval.

The validation set is carved out of the train list by group (UCF101's ``gXX``, the actor
and scene): whole groups go to validation, so train and val never share one. Shards mix
groups: the validation and fusion-fit loaders read only the held-out videos' samples (an index
of them per shard, ``shards.dali.make_loader(videos=...)``: the others are never decoded); the
train loader reads every shard that holds a train video and :class:`VideoSubset` drops the
held-out rows of each batch.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import polars as pl
import torch

from shards.dali import LoaderConfig, make_loader
from shards.format import MANIFEST_NAME

from core.config import ExperimentConfig


class DataError(ValueError):
    """Shards or a manifest that cannot be trained on."""


def read_manifest(split_dir: Path) -> pl.DataFrame:
    """The manifest's videos that were sharded successfully."""
    path = Path(split_dir) / MANIFEST_NAME
    if not path.is_file():
        raise DataError(f"{path}: no manifest; build the shards first (the `data` stage)")
    manifest = pl.read_parquet(path).filter(pl.col("status") == "ok")
    if manifest.is_empty():
        raise DataError(f"{path}: no video was sharded successfully")
    return manifest


def class_names(manifest: pl.DataFrame) -> list[str]:
    """Class names in label order (labels must be 0..K-1)."""
    pairs = manifest.select("label", "class_name").unique().sort("label")
    labels = pairs["label"].to_list()
    if labels != list(range(len(labels))) or pairs["class_name"].n_unique() != len(labels):
        raise DataError(f"manifest labels are not one class name per label 0..K-1: {pairs.rows()[:5]}")
    return pairs["class_name"].to_list()


def val_groups(manifest: pl.DataFrame, fraction: float, seed: int) -> set[int]:
    """``fraction`` of the train list's groups (at least one if fraction > 0), drawn by ``seed``."""
    groups = sorted(manifest.filter(pl.col("subset") == "train")["group"].unique().to_list())
    if fraction <= 0:
        return set()
    if len(groups) < 2:
        raise DataError(f"val_fraction {fraction} needs at least two train groups, found {groups}")
    n = min(len(groups) - 1, max(1, round(fraction * len(groups))))
    return {int(g) for g in np.random.default_rng(seed).choice(groups, n, replace=False)}


class VideoSubset:
    """The batches of ``loader`` restricted to rows whose video is (or, ``keep=False``, is not)
    in ``videos`` (and, with ``clips``, whose clip is one of its video's); empty batches are skipped."""

    def __init__(self, loader: Iterable[dict], videos: set[str], keep: bool = True,
                 clips: dict[str, set[int]] | None = None):
        self.loader, self.videos, self.keep, self.clips = loader, set(videos), keep, clips

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        """Forward to the wrapped loader (``ShardLoader.set_epoch``): without it a resumed run
        (a retried trial, a pruning chain restarted at step k) would read epoch 0's order."""
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict]:
        for batch in self.loader:
            rows = [i for i, v in enumerate(batch["video"]) if (v in self.videos) == self.keep]
            if self.clips is not None:  # and of those videos only these clips
                clip = batch["clip"].tolist()
                rows = [i for i in rows if clip[i] in self.clips.get(batch["video"][i], ())]
            if len(rows) == len(batch["video"]):
                yield batch
            elif rows:
                yield _select(batch, rows)


def _select(batch: dict, rows: list[int]) -> dict:
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            out[key] = value[torch.as_tensor(rows, device=value.device)]
        else:
            out[key] = [value[i] for i in rows]
    return out


@dataclass
class StreamData:
    """What one (stream, run) trial reads."""
    split_dir: Path
    classes: list[str]
    train_videos: set[str]
    val_videos: set[str]
    train_shards: list[Path]  # shards with train (not val) videos
    val_shards: list[Path]  # shards with val videos
    all_train_shards: list[Path]
    test_shards: list[Path]


def stream_data(cfg: ExperimentConfig, seed: int, split_dir: Path | None = None) -> StreamData:
    split_dir = Path(split_dir or cfg.paths.shards)
    manifest = read_manifest(split_dir)
    held_out = val_groups(manifest, cfg.train.val_fraction, seed)
    train = manifest.filter(pl.col("subset") == "train")
    test = manifest.filter(pl.col("subset") == "test")
    if train.is_empty() or test.is_empty():
        raise DataError(f"{split_dir / MANIFEST_NAME}: needs both train and test videos")
    is_val = pl.col("group").is_in(sorted(held_out))

    def shards(rows: pl.DataFrame) -> list[Path]:
        return [split_dir / s for s in sorted(rows["shard"].unique().to_list())]

    return StreamData(
        split_dir=split_dir, classes=class_names(manifest),
        train_videos=set(train.filter(~is_val)["video"]), val_videos=set(train.filter(is_val)["video"]),
        train_shards=shards(train.filter(~is_val)), val_shards=shards(train.filter(is_val)),
        all_train_shards=shards(train), test_shards=shards(test))


def loader_config(cfg: ExperimentConfig, stream: str, *, train: bool, seed: int = 0,
                  light: bool = False, ten_crop: bool | None = None) -> LoaderConfig:
    """A ``shards.dali.LoaderConfig`` for one stream from the experiment config (train: with
    ``clips_per_video`` when ``data.train_clips_stored`` stores more clips than an epoch reads;
    ``light`` eval: ``eval.light_clips`` evenly spaced clips per video, one crop). The batch
    size is the stream's (``train.<stream>.batch_size`` over ``train.batch_size``)."""
    section = dataclasses.asdict(cfg.loader)
    section["crop_scales"] = tuple(section["crop_scales"])
    # a trial's CPUs (ray.cpus_per_trial) size its DALI thread pool unless set explicitly
    section["threads"] = section["threads"] or max(1, int(cfg.ray.cpus_per_trial))
    d = cfg.data  # train epochs draw clips_per_video of the stored clips, when more are stored
    resample = train and d.train_clips_stored is not None and d.train_clips_stored > d.clips_per_video
    batch = cfg.stream_train(stream).batch_size
    return LoaderConfig(stream=stream, train=train, input_size=cfg.model.input_size,
                        clips_per_video=d.clips_per_video if resample else (cfg.eval.light_clips if light else None),
                        batch_size=batch if train else (cfg.eval.batch_size or batch),
                        ten_crop=(cfg.eval.ten_crop if ten_crop is None else ten_crop) and not train and not light,
                        flow_bound=cfg.data.flow_bound,
                        flow_scale=cfg.model.flow_scale, seed=seed, **section)


def make_loaders(cfg: ExperimentConfig, stream: str, data: StreamData, seed: int, *, val: bool = True) -> dict:
    """``train`` (augmented, without val videos), ``val`` (None without val videos or with
    ``val=False``: a caller that reads none builds no pipeline for it) and ``test`` loaders."""
    train = make_loader(data.train_shards, loader_config(cfg, stream, train=True, seed=seed))
    loaders = {"train": VideoSubset(train, data.val_videos, keep=False) if data.val_videos else train,
               "val": None,
               "test": make_loader(data.test_shards, loader_config(cfg, stream, train=False))}
    if data.val_videos and val:
        loaders["val"] = val_loader(cfg, stream, data)
    return loaders


def val_loader(cfg: ExperimentConfig, stream: str, data: StreamData):
    """The validation videos' clips under the validation protocol (``eval.val_clips`` evenly
    spaced stored clips, ``eval.val_ten_crop``), read alone: no other sample of their shards is decoded."""
    settings = loader_config(cfg, stream, train=False, ten_crop=cfg.eval.val_ten_crop)
    return make_loader(data.val_shards, dataclasses.replace(settings, clips_per_video=cfg.eval.val_clips),
                       videos=data.val_videos)


def even_clips(stored: int, k: int | None) -> list[int]:
    """``k`` evenly spaced clip indices of ``stored`` (all when k is None or k >= stored)."""
    if k is None or k >= stored:
        return list(range(stored))
    return [int((i + 0.5) * stored / k) for i in range(k)]


def val_clips(cfg: ExperimentConfig, data: StreamData) -> dict[str, set[int]] | None:
    """Per validation video, the clips the validation protocol reads (``eval.val_clips``)."""
    if cfg.eval.val_clips is None:
        return None
    stored = read_manifest(data.split_dir).select("video", "clips")
    return {v: set(even_clips(n, cfg.eval.val_clips)) for v, n in stored.iter_rows() if v in data.val_videos}


def fit_videos(cfg: ExperimentConfig, data: StreamData) -> set[str] | None:
    """The train-list videos the SVM fusions fit on: the run's held-out (validation) videos for
    ``fusion.fit_on: heldout``, None (every train-list video) for ``fit_on: train``."""
    return data.val_videos if cfg.fusion.fit_on == "heldout" else None


def light_test_loader(cfg: ExperimentConfig, stream: str, data: StreamData):
    """The test videos under the light protocol (``eval.light_clips`` clips, one crop): the
    accuracy right after a prune, before fine-tuning, and the unpruned model's beside it."""
    return make_loader(data.test_shards, loader_config(cfg, stream, train=False, light=True))


def train_eval_loader(cfg: ExperimentConfig, stream: str, data: StreamData):
    """The train-list clips the SVM fusions fit on, with the eval transform: the held-out videos
    only under ``fusion.fit_on: heldout`` (scoring the others fed nothing: issue 26), else
    every train-list clip."""
    wanted = fit_videos(cfg, data)
    if wanted is None:
        return make_loader(data.all_train_shards, loader_config(cfg, stream, train=False))
    if not wanted:
        raise DataError("fusion.fit_on: heldout, but this run holds out no videos (train.val_fraction)")
    return make_loader(data.val_shards, loader_config(cfg, stream, train=False), videos=wanted)
