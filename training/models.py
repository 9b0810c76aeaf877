"""The two streams: torchvision ResNets with a 3-channel (spatial) or 20-channel (temporal) input.

``model_spec`` records the weight shape of every Conv2d / BatchNorm2d / Linear by module
name, so ``build_from_spec`` rebuilds a pruned (narrower) model with the same module names
and its state_dict loads as is.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

from shards.format import CHANNELS

ARCHS = ("resnet18", "resnet50", "resnet101")
IN_CHANNELS = {"spatial": 3, "temporal": CHANNELS}
SPEC_VERSION = 1
_SHAPED = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)


class WeightsError(RuntimeError):
    """Pretrained weights that cannot be fetched or do not fit the architecture."""


def build_stream(stream: str, arch: str, num_classes: int, *, weights: str = "none",
                 dropout: float = 0.0, freeze_backbone: bool = False,
                 gamma_init: float | None = None, width: float = 1.0) -> nn.Module:
    """A ResNet for one stream. ``weights``: ``none``, ``imagenet`` (torchvision's default
    version), a version by name (``IMAGENET1K_V1``: ``weights_name``) or a local state_dict path.
    ``gamma_init`` sets every BatchNorm's γ (Network Slimming starts at 0.5).

    The temporal stream's conv1 takes 20 channels; from pretrained weights it gets the
    cross-modality initialisation of TSN (RGB filters averaged, replicated over 20 channels).
    ``dropout`` > 0 puts a Dropout after global pooling, so ``fc`` stays a plain Linear.
    ``width`` < 1 narrows every layer to that share of its channels (at least one), from scratch
    only: a narrow ResNet is the arch with fewer channels, not a pruned pretrained one.
    """
    if stream not in IN_CHANNELS:
        raise ValueError(f"unknown stream {stream!r}, expected one of {list(IN_CHANNELS)}")
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}, expected one of {list(ARCHS)}")
    if not 0 < width <= 1:
        raise ValueError(f"width {width!r}: expected a share of the channels in (0, 1]")
    if width < 1 and weights != "none":
        raise ValueError(f"width {width} narrows a model built from scratch; weights {weights!r} "
                         "are for the full-width arch")
    model = torchvision.models.get_model(arch, weights=None)
    if weights != "none":
        model.load_state_dict(_pretrained_state(arch, weights))
    if stream == "temporal":
        _widen_conv1(model, IN_CHANNELS["temporal"])
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    if width < 1:
        model = _narrowed(model, width)
    if dropout > 0:
        model.avgpool = nn.Sequential(model.avgpool, nn.Dropout(dropout))
    if gamma_init is not None:
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.weight.fill_(gamma_init)
    if freeze_backbone:
        for name, param in model.named_parameters():
            param.requires_grad = name.startswith("fc.")
    model.stream_meta = {"stream": stream, "arch": arch, "num_classes": num_classes,
                         "dropout": float(dropout)}
    return model


def weights_enum(arch: str, weights: str):
    """The torchvision weights enum member ``weights`` (``imagenet`` = the arch's DEFAULT, or a
    version name such as ``IMAGENET1K_V1``) names; None for ``none`` or a file path."""
    if weights == "none" or not (weights == "imagenet" or weights.isupper()):
        return None
    versions = torchvision.models.get_model_weights(arch)
    if weights == "imagenet":
        return versions.DEFAULT
    if weights not in versions.__members__:
        raise WeightsError(f"model.weights: {weights!r} is not a torchvision {arch} weights version "
                           f"(known: {[v for v in versions.__members__ if v != 'DEFAULT']}, or 'imagenet' = "
                           f"{versions.DEFAULT.name})")
    return versions[weights]


def weights_name(arch: str, weights: str) -> str:
    """What ``weights`` means, for the record: ``ResNet101_Weights.IMAGENET1K_V2`` for
    ``imagenet`` or a version name (no download), else the value as given (``none``, a path)."""
    enum = weights_enum(arch, weights)
    return weights if enum is None else f"{type(enum).__name__}.{enum.name}"


def _pretrained_state(arch: str, weights: str) -> dict[str, torch.Tensor]:
    enum = weights_enum(arch, weights)
    if enum is not None:
        try:
            return enum.get_state_dict(progress=False, check_hash=True)
        except (OSError, RuntimeError) as exc:  # URLError is an OSError
            raise WeightsError(
                f"cannot fetch the ImageNet weights of {arch} ({enum.url}): {exc}. Offline, "
                f"download that file elsewhere and either set `model.weights` in the config to its "
                f"local path, or copy it into {torch.hub.get_dir()}/checkpoints/") from exc
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsError(f"model.weights: {weights!r} is neither 'none', 'imagenet' nor an existing file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: not a loadable state_dict: {exc}") from exc
    expected = torchvision.models.get_model(arch, weights=None).state_dict()
    bad = sorted(k for k in expected if k not in state or state[k].shape != expected[k].shape)
    if bad or set(state) - set(expected):
        raise WeightsError(f"{path}: not a torchvision {arch} state_dict (missing or misshapen: "
                           f"{bad[:5]}, unexpected: {sorted(set(state) - set(expected))[:5]})")
    return state


def _widen_conv1(model: nn.Module, channels: int) -> None:
    """conv1 for ``channels`` inputs: the RGB filters' mean, replicated (cross-modality init)."""
    old = model.conv1
    new = nn.Conv2d(channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
    with torch.no_grad():
        new.weight.copy_(old.weight.mean(dim=1, keepdim=True).expand(-1, channels, -1, -1))
    model.conv1 = new


def _narrowed(model: nn.Module, width: float) -> nn.Module:
    """``model`` with every channel count c (not the input's, not the classes) cut to
    max(1, round(c × width)): equal counts stay equal, so residual sums still fit. The new
    layers are initialised as torchvision initialises a ResNet."""
    def narrow(channels: int) -> int:
        return max(1, round(channels * width))

    for name, module in list(model.named_modules()):
        if not isinstance(module, _SHAPED):
            continue
        shape = list(module.weight.shape)
        if isinstance(module, nn.Linear):
            shape[1] = narrow(shape[1])
        else:
            shape[0] = narrow(shape[0])
            if isinstance(module, nn.Conv2d) and name != "conv1":
                shape[1] = narrow(shape[1])
        if list(module.weight.shape) != shape:
            new = _resized(module, tuple(shape))
            if isinstance(new, nn.Conv2d):
                nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, new)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module behind a ``torch.compile`` wrapper."""
    return getattr(model, "_orig_mod", model)


def model_spec(model: nn.Module) -> dict:
    """The architecture of a (possibly pruned) stream model as plain data."""
    model = unwrap(model)
    meta = getattr(model, "stream_meta", None)
    if meta is None:
        raise ValueError("model_spec needs a model made by training.models (it lacks `stream_meta`)")
    layers = {name: list(module.weight.shape) for name, module in model.named_modules()
              if isinstance(module, _SHAPED)}
    return {"version": SPEC_VERSION, **meta, "layers": layers}


def build_from_spec(spec: dict) -> nn.Module:
    """A freshly initialised model with exactly the layer shapes (and names) of ``spec``."""
    if spec.get("version") != SPEC_VERSION:
        raise ValueError(f"model spec version {spec.get('version')}, this code reads {SPEC_VERSION}")
    model = build_stream(spec["stream"], spec["arch"], spec["num_classes"], dropout=spec["dropout"])
    shaped = {name: module for name, module in model.named_modules() if isinstance(module, _SHAPED)}
    if set(shaped) != set(spec["layers"]):
        raise ValueError(f"model spec layers differ from {spec['arch']}: "
                         f"{sorted(set(shaped) ^ set(spec['layers']))[:5]}")
    for name, module in shaped.items():
        shape = tuple(spec["layers"][name])
        if tuple(module.weight.shape) != shape:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, _resized(module, shape))
    return model


def _resized(module: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    """A new module like ``module`` but with weight shape ``shape``."""
    if isinstance(module, nn.Conv2d):
        return nn.Conv2d(shape[1] * module.groups, shape[0], module.kernel_size, module.stride,
                         module.padding, module.dilation, module.groups, module.bias is not None)
    if isinstance(module, nn.BatchNorm2d):
        return nn.BatchNorm2d(shape[0], module.eps, module.momentum, module.affine,
                              module.track_running_stats)
    return nn.Linear(shape[1], shape[0], module.bias is not None)
