"""Checkpoints that rebuild their own (possibly pruned) model.

A checkpoint is a plain dict of tensors and plain data, so it loads with
``torch.load(weights_only=True)``: format version, architecture spec, weights, optimizer
state, epoch, config, class list and an ``extra`` dict. Saving is atomic (temporary name,
fsync, rename).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.atomic import atomic_file
from training.models import build_from_spec, model_spec, unwrap

CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used here."""


@dataclass
class Checkpoint:
    model: nn.Module
    optimizer_state: dict | None
    epoch: int
    config: dict
    classes: list[str]
    extra: dict = field(default_factory=dict)


def save_checkpoint(path: str | Path, model: nn.Module, *, epoch: int, config: Any,
                    classes: list[str], optimizer: torch.optim.Optimizer | None = None,
                    extra: dict | None = None) -> Path:
    """Write a checkpoint atomically. ``config``: a dict or anything with ``to_dict()``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = unwrap(model)
    payload = {
        "format_version": CHECKPOINT_VERSION,
        "spec": model_spec(model),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "epoch": int(epoch),
        "config": config.to_dict() if hasattr(config, "to_dict") else dict(config or {}),
        "classes": list(classes),
        "extra": dict(extra or {}),
    }
    with atomic_file(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | Path, *, classes: list[str] | None = None,
                    map_location: str | torch.device = "cpu", arch: str | None = None) -> Checkpoint:
    """Rebuild the model of a checkpoint; refuse another format version, class list or
    (given ``arch``) architecture."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint: {exc}") from exc
    version = payload.get("format_version") if isinstance(payload, dict) else None
    if version != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version}, this code reads "
                              f"version {CHECKPOINT_VERSION}")
    if classes is not None and list(classes) != payload["classes"]:
        diff = [(i, a, b) for i, (a, b) in enumerate(zip(classes, payload["classes"])) if a != b]
        raise CheckpointError(
            f"{path}: trained on {len(payload['classes'])} classes, expected {len(classes)}; "
            f"first differences (index, expected, checkpoint): {diff[:3]}")
    if arch is not None and payload["spec"].get("arch") != arch:
        raise CheckpointError(f"{path}: checkpoint architecture {payload['spec'].get('arch')!r}, "
                              f"the config asks for {arch!r}")
    model = build_from_spec(payload["spec"])
    model.load_state_dict(payload["state_dict"])
    return Checkpoint(model=model.to(map_location), optimizer_state=payload["optimizer"],
                      epoch=payload["epoch"], config=payload["config"], classes=payload["classes"],
                      extra=payload["extra"])
