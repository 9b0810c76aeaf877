"""Small models and inputs shared by the model, checkpoint, IROF and metric tests: a narrowed
(pruned-like) resnet18, a tiny CNN, a model whose decision depends on one known region, and
smooth random images."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from training.models import build_stream


def narrowed_resnet18(num_classes: int = 5) -> nn.Module:
    """A spatial resnet18 with layer1.0's inner channels cut from 64 to 40 (as pruning would)."""
    torch.manual_seed(0)
    model = build_stream("spatial", "resnet18", num_classes)
    block = model.layer1[0]
    keep = torch.arange(40)
    conv1 = nn.Conv2d(64, 40, 3, 1, 1, bias=False)
    conv1.weight.data = block.conv1.weight.data[keep].clone()
    bn1 = nn.BatchNorm2d(40)
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(bn1, name).data = getattr(block.bn1, name).data[keep].clone()
    conv2 = nn.Conv2d(40, 64, 3, 1, 1, bias=False)
    conv2.weight.data = block.conv2.weight.data[:, keep].clone()
    block.conv1, block.bn1, block.conv2 = conv1, bn1, conv2
    return model


def small_cnn(channels, classes=5, seed=0, float64=True):
    """A small random CNN. In float64 (Quantus hands the model float32 tensors; it computes in
    float64 anyway), float32 rounding, which differs between batch sizes, can neither hide nor
    fake a difference: agreement to 1e-5 then means the same computation."""
    torch.manual_seed(seed)
    body = torch.nn.Sequential(
        torch.nn.Conv2d(channels, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(128, classes))
    with torch.no_grad():
        body[-1].weight.mul_(3.0)  # outputs far from uniform, curves far from flat
    return (torch.nn.Sequential(AsFloat64(), body.double()) if float64 else body).eval()


class AsFloat64(torch.nn.Module):
    def forward(self, x):
        return x.double()


def smooth_images(n, channels, size, seed):
    """Blocky random images of varying block size and contrast (so SLIC gives 3-channel
    samples different numbers of segments), plus a little noise."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        block, contrast = ((8, 3.0), (4, 1.0), (16, 10.0))[i % 3]
        coarse = rng.normal(size=(channels, size // block, size // block)) * contrast
        images.append(np.repeat(np.repeat(coarse, block, axis=1), block, axis=2))
    x = np.stack(images) + 0.1 * rng.normal(size=(n, channels, size, size))
    return x.astype(np.float32)


class DecisiveRegionModel(torch.nn.Module):
    """Class 1's score grows with the mean of the top-left 8x8 block, nothing else matters."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(4.0))

    def forward(self, x):
        evidence = self.scale * x[:, :, :8, :8].mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(evidence), evidence], dim=1)
