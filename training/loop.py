"""The training loop: any iterable of ``{"x", "label", ...}`` batches, one epoch per iteration.

bf16 autocast on GPU, channels_last, optional ``torch.compile``, SGD or AdamW, a per-epoch
learning-rate schedule with linear warm-up (so a resumed run gets exactly the same rates),
gradient clipping, model selection (``select``: the best val accuracy or val loss epoch's
weights are restored at the end, or the last epoch's are kept), early stopping on the selection
metric, and an
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

from core.progress import progress

from core.config import TrainConfig
from training.evaluate import evaluate, resolve_device


@dataclass
class TrainState:
    """Everything beyond weights and optimizer that a resumed run needs (checkpoint-safe data)."""
    epoch: int = 0  # epochs completed
    best_val_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the best val metric
    best_val_acc: float = -math.inf
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
    """Learning rate of 0-based ``epoch``: ``lr·(epoch+1)/(warmup+1)`` over the first
    ``warmup_epochs``, then the scheduler over the epochs that follow (cosine to 0 at the end)."""
    warmup = cfg.warmup_epochs
    if epoch < warmup:
        return cfg.lr * (epoch + 1) / (warmup + 1)
    if cfg.scheduler == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / max(cfg.epochs - warmup, 1)))
    if cfg.scheduler == "step":
        return cfg.lr * cfg.gamma ** (epoch // cfg.step_size)
    if cfg.scheduler == "multistep":
        return cfg.lr * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    return cfg.lr


def selection_rule(cfg: TrainConfig) -> str:
    """``cfg.select``, or its default: val_loss with early stopping, else the last epoch."""
    return cfg.select or ("val_loss" if cfg.early_stopping_patience > 0 else "last")


def is_bn_param(model: nn.Module) -> set[int]:
    """ids of every BatchNorm's γ and β."""
    return {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for p in m.parameters(recurse=False)}


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    groups: list[dict] = [{"params": params}]
    if not cfg.bn_weight_decay:  # γ/β out of weight decay: only the L1 term pulls γ toward 0
        bn = is_bn_param(model)
        groups = [{"params": [p for p in params if id(p) not in bn]},
                  {"params": [p for p in params if id(p) in bn], "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def train(model: nn.Module, train_loader: Iterable[dict], val_loader: Iterable[dict] | None,
          cfg: TrainConfig, *, after_backward: Callable[[nn.Module], None] | None = None,
          on_epoch: Callable[[TrainState, nn.Module, torch.optim.Optimizer], None] | None = None,
          state: TrainState | None = None, optimizer_state: dict | None = None,
          seed: int | None = None, loader_epoch_offset: int = 0) -> TrainResult:
    """Train ``model`` in place for epochs ``state.epoch .. cfg.epochs - 1`` (from 0 without ``state``).

    ``on_epoch(state, model, optimizer)`` runs after every epoch (checkpointing, reporting).
    To resume, pass the checkpointed ``state`` (it carries the epoch), ``optimizer_state`` and
    the same ``seed``: each epoch's randomness depends only on (seed, epoch), so a resumed run
    equals an uninterrupted one. The Python/NumPy/torch RNGs are seeded per epoch, and a
    train loader with ``set_epoch`` (``shards.dali.ShardLoader``) is set to epoch
    ``loader_epoch_offset + epoch`` (loaders shared by successive calls, as in a pruning
    chain, pass how many epochs they have already given).
    Returns the model with the weights ``selection_rule(cfg)`` selects; the history's rows
    record the ``select`` rule and ``dropout`` (the model's), and ``selected`` marks the kept epoch.
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
    state = state or TrainState()  # a resumed state knows its own epoch
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
                                  seconds=time.perf_counter() - started, **_recorded(model, cfg)))
        state.epoch, state.samples = epoch + 1, {"train": seen}
        if val_loader is not None:
            _validate(model, val_loader, num_classes, cfg, state, device, lr)
        if on_epoch is not None:
            on_epoch(state, model, optimizer)
        if state.stopped_early:
            break
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    kept = state.best_epoch if state.best_state is not None else state.epoch
    for row in state.history:
        row["selected"] = row["epoch"] == kept
    return TrainResult(model=model, optimizer=optimizer, state=state)


def _recorded(model: nn.Module, cfg: TrainConfig) -> dict:
    """What each history row records of the settings: the model's dropout and the selection rule."""
    meta = getattr(model, "stream_meta", None) or {}
    return {"dropout": meta.get("dropout"), "select": selection_rule(cfg)}


def _validate(model, val_loader, num_classes, cfg, state: TrainState, device, lr) -> None:
    """A val row; keep the weights of the best epoch by ``selection_rule(cfg)`` and stop early
    after ``early_stopping_patience`` epochs without a better one."""
    started = time.perf_counter()
    result = evaluate(model, val_loader, num_classes, device=device, amp=cfg.amp, desc="validate")
    state.history.append(dict(epoch=state.epoch, phase="val", loss=result.loss,
                              accuracy=result.clip_accuracy, lr=lr,
                              seconds=time.perf_counter() - started, **_recorded(model, cfg)))
    state.samples["val"] = result.n_clips
    rule = selection_rule(cfg)
    if rule == "last":
        return
    if rule == "val_loss":
        better = result.loss < state.best_val_loss
    else:  # val_accuracy; a tie goes to the lower loss
        better = (result.clip_accuracy, -result.loss) > (state.best_val_acc, -state.best_val_loss)
    if better:
        state.best_val_loss, state.best_val_acc = result.loss, result.clip_accuracy
        state.best_epoch, state.bad_epochs = state.epoch, 0
        state.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    else:
        state.bad_epochs += 1
        state.stopped_early = 0 < cfg.early_stopping_patience <= state.bad_epochs


def epoch_metrics(history: list[dict], epoch: int, samples: dict | None = None) -> dict[str, float]:
    """Tune metrics of one epoch from the loop's history: ``{phase}_loss``, ``{phase}_acc``,
    ``{phase}_seconds`` for train and val, the epoch's ``lr``, and ``{phase}_samples_per_s``
    where ``samples`` (``TrainState.samples``: samples seen per phase) is given."""
    metrics = {}
    for row in history:
        if row["epoch"] == epoch:
            phase = row["phase"]
            metrics.update({f"{phase}_loss": row["loss"], f"{phase}_acc": row["accuracy"],
                            f"{phase}_seconds": row["seconds"]})
            if phase == "train":
                metrics["lr"] = row["lr"]
            if samples and phase in samples and row["seconds"] > 0:
                metrics[f"{phase}_samples_per_s"] = samples[phase] / row["seconds"]
    return metrics
