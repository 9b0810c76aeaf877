"""A plain reader with the DALI loaders' eval transform: tar + PIL + numpy + torch.

Used only by tests (DALI output must equal it) and benchmarks (the baseline). It reads raw
members with :func:`shards.tarfiles.iter_shard` and decodes only the known components with
:func:`shards.format.decode_sample`: nothing is ever unpickled, unlike webdataset's default
decoders, so a shard from elsewhere cannot run code.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from shards.dali import FIVE_POSITIONS, IMAGENET_MEAN, IMAGENET_STD, LoaderConfig, shard_paths
from shards.format import CHANNELS, DecodedSample, check_meta, decode_sample
from shards.tarfiles import iter_shard


def crop(planes: np.ndarray, size: int, pos_x: float, pos_y: float) -> np.ndarray:
    """(C, H, W) → (C, size, size) at a relative position; anchors round half up, as DALI's."""
    _, height, width = planes.shape
    if height < size or width < size:
        raise ValueError(f"image {height}x{width} is smaller than the crop {size}x{size}")
    top = math.floor((height - size) * pos_y + 0.5)
    left = math.floor((width - size) * pos_x + 0.5)
    return planes[:, top:top + size, left:left + size]


def normalised_planes(sample: DecodedSample, cfg: LoaderConfig) -> np.ndarray:
    """float32 (C, H, W): ImageNet-normalised RGB, or flow dequantised to pixels."""
    if cfg.stream == "spatial":
        mean = np.float32(255) * np.array(IMAGENET_MEAN, np.float32)[:, None, None]
        std = np.float32(255) * np.array(IMAGENET_STD, np.float32)[:, None, None]
        return (sample.rgb.transpose(2, 0, 1).astype(np.float32) - mean) / std
    return (sample.flow_q.astype(np.float32) - np.float32(127.5)) / np.float32(127.5 / cfg.flow_bound * cfg.flow_scale)


def flip(planes: np.ndarray, stream: str) -> np.ndarray:
    """Horizontal flip; a flipped video moves the other way, so flow x fields change sign."""
    flipped = planes[..., ::-1].copy()
    if stream == "temporal":
        flipped[: CHANNELS // 2] *= -1
    return flipped


def eval_transform(sample: DecodedSample, cfg: LoaderConfig) -> torch.Tensor:
    """Centre crop (C, S, S), or ten-crop (10, C, S, S): 4 corners + centre, then their flips."""
    planes = normalised_planes(sample, cfg)
    if not cfg.ten_crop:
        x = crop(planes, cfg.input_size, 0.5, 0.5)
    else:
        crops = [crop(planes, cfg.input_size, px, py) for px, py in FIVE_POSITIONS]
        x = np.stack(crops + [flip(c, cfg.stream) for c in crops])
    if cfg.stream == "temporal" and cfg.mean_subtraction:
        x = x - x.mean(axis=(-2, -1), keepdims=True)
    return torch.from_numpy(np.ascontiguousarray(x))


class ReferenceDataset(IterableDataset):
    """Every sample of the shards once, in file order; DataLoader workers split the shards."""

    def __init__(self, shards, cfg: LoaderConfig):
        if cfg.train:
            raise ValueError("the reference reader implements the eval transform only (train=False)")
        self.paths, self.cfg = shard_paths(shards), cfg

    def __iter__(self):
        worker = get_worker_info()
        paths = self.paths if worker is None else self.paths[worker.id::worker.num_workers]
        for path in paths:
            for raw in iter_shard(path):
                sample = decode_sample(raw, source=str(path))
                check_meta(sample.meta, source=str(path), flow_bound=self.cfg.flow_bound)
                yield {"x": eval_transform(sample, self.cfg), "label": sample.label,
                       "video": sample.meta.video, "clip": sample.meta.clip}


def reference_loader(shards, cfg: LoaderConfig, workers: int = 2) -> DataLoader:
    """Batches shaped like the DALI loader's (label and clip int64, video a list of str)."""
    return DataLoader(ReferenceDataset(shards, cfg), batch_size=cfg.batch_size, num_workers=workers,
                      persistent_workers=workers > 0)
