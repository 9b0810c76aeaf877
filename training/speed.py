"""Inference speed of a (pruned) model: latency at batch 1 and throughput at a larger batch.

Cheap by design (each pruning step measures it): a warm-up pass, then ``repeats`` timed
forward passes per batch size, the median kept. Inputs are zeros of the model's own input
shape (``conv1.in_channels`` x ``input_size`` squared), on the model's device.
"""
from __future__ import annotations

import statistics
import time

import torch
from torch import nn


def device_name(device: torch.device) -> str:
    """'cpu' or the GPU's name (e.g. 'cuda: NVIDIA H200')."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return device.type


def _median_seconds(model: nn.Module, x: torch.Tensor, repeats: int) -> float:
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    model(x)  # warm-up (allocations, cuDNN autotuning)
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def measure_speed(model: nn.Module, input_size: int, *, repeats: int = 3, throughput_batch: int = 8) -> dict:
    """``latency_ms`` (one clip, batch 1), ``throughput_cps`` (clips per second at
    ``throughput_batch``) and ``device``, keyed like the `accuracy` table's columns. With
    ``repeats`` 0 nothing is measured and the values are None."""
    if repeats < 0 or throughput_batch < 1 or input_size < 1:
        raise ValueError(f"measure_speed: repeats {repeats} (>= 0), throughput_batch {throughput_batch} (>= 1), "
                         f"input_size {input_size} (>= 1)")
    if repeats == 0:
        return {"latency_ms": None, "throughput_cps": None, "device": None}
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        shape = (model.conv1.in_channels, input_size, input_size)
        latency = _median_seconds(model, torch.zeros(1, *shape, device=device), repeats)
        batch = _median_seconds(model, torch.zeros(throughput_batch, *shape, device=device), repeats)
    finally:
        model.train(was_training)
    return {"latency_ms": latency * 1000.0, "throughput_cps": throughput_batch / batch,
            "device": device_name(device)}
