"""Inference speed: batch-1 latency and throughput, measured on the model's own input shape."""
from __future__ import annotations

import time

import pytest
from torch import nn

from training.speed import measure_speed

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors, one intra-op thread

class Sleeper(nn.Module):
    """A model whose forward takes a known time whatever the batch, and records its inputs."""

    def __init__(self, seconds: float, in_channels: int = 20):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 2, 1)
        self.seconds, self.shapes = seconds, []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        time.sleep(self.seconds)
        return self.conv1(x)


def test_latency_and_throughput_have_the_known_values():
    model = Sleeper(0.02).train()
    speed = measure_speed(model, 16, repeats=3, throughput_batch=4)
    assert speed["device"] == "cpu"
    assert 20 <= speed["latency_ms"] < 80  # sleep overshoots under load, never undershoots
    assert 4 / 0.08 < speed["throughput_cps"] <= 4 / 0.02  # 4 clips per 20 ms pass
    # a warm-up and 3 timed passes per batch size, on the model's input shape (20 flow channels)
    assert model.shapes == [(1, 20, 16, 16)] * 4 + [(4, 20, 16, 16)] * 4
    assert model.training  # mode restored


def test_zero_repeats_measure_nothing_and_bad_settings_are_refused():
    model = Sleeper(0.0)
    assert measure_speed(model, 8, repeats=0) == {"latency_ms": None, "throughput_cps": None, "device": None}
    assert model.shapes == []
    with pytest.raises(ValueError, match="throughput_batch 0"):
        measure_speed(model, 8, throughput_batch=0)
