"""The training loop: any iterable of ``{"x", "label", ...}`` batches, one epoch per iteration.

bf16 autocast on GPU, channels_last, optional ``torch.compile``, SGD or AdamW, a per-epoch
learning-rate schedule (so a resumed run gets exactly the same rates), gradient clipping,
early stopping on validation loss (the best weights are restored at the end), and an
``after_backward(model)`` hook between backward and the optimizer step (pruning adds its
BN-L1 subgradient there). Deterministic on the CPU for a seed and a deterministic loader.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field, fields
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from shards.progress import progress

from .config import TrainConfig
from .evaluate import evaluate, resolve_device


@dataclass
class TrainState:
    """Everything beyond weights and optimizer that a resumed run needs (checkpoint-safe data)."""
    epoch: int = 0  # epochs completed
    best_val_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the best val loss
    stopped_early: bool = False
    history: list[dict] = field(default_factory=list)  # epoch, phase, loss, accuracy, lr, seconds
    samples: dict = field(default_factory=dict)  # {phase: samples seen} in the latest epoch
    best_state: dict | None = None  # weights of the best val epoch (CPU tensors)

    def to_dict(self) -> dict:
        """Plain data for a checkpoint (shallow: the weights in ``best_state`` are not copied)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "TrainState":
        return cls(**data)


@dataclass
class TrainResult:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    state: TrainState


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """Learning rate of 0-based ``epoch``."""
    if cfg.scheduler == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / max(cfg.epochs, 1)))
    if cfg.scheduler == "step":
        return cfg.lr * cfg.gamma ** (epoch // cfg.step_size)
    return cfg.lr


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def train(model: nn.Module, train_loader: Iterable[dict], val_loader: Iterable[dict] | None,
          cfg: TrainConfig, *, after_backward: Callable[[nn.Module], None] | None = None,
          on_epoch: Callable[[TrainState, nn.Module, torch.optim.Optimizer], None] | None = None,
          start_epoch: int = 0, state: TrainState | None = None, optimizer_state: dict | None = None,
          seed: int | None = None, loader_epoch_offset: int = 0) -> TrainResult:
    """Train ``model`` in place for epochs ``start_epoch .. cfg.epochs - 1``.

    ``on_epoch(state, model, optimizer)`` runs after every epoch (checkpointing, reporting).
    To resume, pass the checkpointed ``state`` (it carries the epoch), ``optimizer_state`` and
    the same ``seed``: each epoch's randomness depends only on (seed, epoch), so a resumed run
    equals an uninterrupted one. The Python/NumPy/torch RNGs are seeded per epoch, and a
    train loader with ``set_epoch`` (``shards.dali.ShardLoader``) is set to epoch
    ``loader_epoch_offset + epoch`` (loaders shared by successive calls, as in a pruning
    chain, pass how many epochs they have already given).
    Returns the model with the best val-loss weights when early stopping is on.
    """
    if seed is not None and state is None:
        seed_everything(seed)
    device = resolve_device(cfg.device)
    amp = cfg.amp and device.type == "cuda"
    memory_format = torch.channels_last if cfg.channels_last else torch.preserve_format
    model.to(device=device, memory_format=memory_format)
    optimizer = make_optimizer(model, cfg)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    state = state or TrainState(epoch=start_epoch)  # a resumed state knows its own epoch
    forward = torch.compile(model) if cfg.compile else model
    loss_fn = nn.CrossEntropyLoss()
    num_classes = model.fc.out_features

    for epoch in range(state.epoch, cfg.epochs):
        lr = lr_at(cfg, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if seed is not None:
            seed_everything(seed * 1000 + epoch)
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(loader_epoch_offset + epoch)
        model.train()
        started, total_loss, correct, seen = time.perf_counter(), 0.0, 0, 0
        for batch in progress(train_loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False):
            x = batch["x"].to(device=device, dtype=torch.float32, memory_format=memory_format,
                              non_blocking=True)
            y = torch.as_tensor(batch["label"]).to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = forward(x)
                loss = loss_fn(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if after_backward is not None:
                after_backward(model)
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            total_loss += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
        if not seen:
            raise ValueError("the train loader gave no batches")
        state.history.append(dict(epoch=epoch + 1, phase="train", loss=total_loss / seen,
                                  accuracy=100.0 * correct / seen, lr=lr,
                                  seconds=time.perf_counter() - started))
        state.epoch, state.samples = epoch + 1, {"train": seen}
        if val_loader is not None:
            _validate(model, val_loader, num_classes, cfg, state, device, lr)
        if on_epoch is not None:
            on_epoch(state, model, optimizer)
        if state.stopped_early:
            break
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    return TrainResult(model=model, optimizer=optimizer, state=state)


def _validate(model, val_loader, num_classes, cfg, state: TrainState, device, lr) -> None:
    """A val row; track the best val loss and stop early after ``patience`` worse epochs."""
    started = time.perf_counter()
    result = evaluate(model, val_loader, num_classes, device=device, amp=cfg.amp, desc="validate")
    state.history.append(dict(epoch=state.epoch, phase="val", loss=result.loss,
                              accuracy=result.clip_accuracy, lr=lr,
                              seconds=time.perf_counter() - started))
    state.samples["val"] = result.n_clips
    if cfg.early_stopping_patience <= 0:
        return
    if result.loss < state.best_val_loss:
        state.best_val_loss, state.best_epoch, state.bad_epochs = result.loss, state.epoch, 0
        state.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    else:
        state.bad_epochs += 1
        state.stopped_early = state.bad_epochs >= cfg.early_stopping_patience
