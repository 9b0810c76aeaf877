"""Stream models: input channels, cross-modality init from a local "pretrained" file,
offline ImageNet message, and the spec round trip of a narrowed (pruned-like) model."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from tests.tiny_models import narrowed_resnet18
from training.models import WeightsError, build_from_spec, build_stream, model_spec


def test_temporal_stream_takes_twenty_channels():
    model = build_stream("temporal", "resnet18", 7).eval()
    assert model.conv1.in_channels == 20
    with torch.no_grad():
        assert model(torch.randn(2, 20, 32, 32)).shape == (2, 7)
    with pytest.raises(RuntimeError):
        model(torch.randn(2, 3, 32, 32))


def test_cross_modality_init_from_local_weights(tmp_path):
    torch.manual_seed(1)
    pretrained = torchvision.models.resnet18().state_dict()  # a random stand-in "pretrained" file
    path = tmp_path / "resnet18.pth"
    torch.save(pretrained, path)

    temporal = build_stream("temporal", "resnet18", 4, weights=str(path))
    rgb_mean = pretrained["conv1.weight"].mean(dim=1)
    for c in range(20):
        assert torch.equal(temporal.conv1.weight[:, c], rgb_mean)
    assert torch.equal(temporal.layer3[1].conv2.weight, pretrained["layer3.1.conv2.weight"])
    assert temporal.fc.out_features == 4

    spatial = build_stream("spatial", "resnet18", 4, weights=str(path))
    assert torch.equal(spatial.conv1.weight, pretrained["conv1.weight"])
    assert torch.equal(spatial.bn1.running_var, pretrained["bn1.running_var"])


def test_bad_local_weights_are_refused(tmp_path):
    wrong = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), wrong)
    with pytest.raises(WeightsError, match="not a torchvision resnet18"):
        build_stream("spatial", "resnet18", 4, weights=str(wrong))
    with pytest.raises(WeightsError, match="neither"):
        build_stream("spatial", "resnet18", 4, weights=str(tmp_path / "missing.pth"))


def test_imagenet_offline_says_how_to_pass_a_local_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty cache
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # a closed port: really offline
    with pytest.raises(WeightsError, match="local path"):
        build_stream("spatial", "resnet18", 4, weights="imagenet")


def test_dropout_and_frozen_backbone():
    model = build_stream("spatial", "resnet18", 3, dropout=0.5, freeze_backbone=True)
    assert isinstance(model.fc, nn.Linear)
    assert any(isinstance(m, nn.Dropout) for m in model.avgpool)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}


def test_spec_round_trip_rebuilds_a_narrowed_model():
    narrowed = narrowed_resnet18().eval()
    spec = model_spec(narrowed)
    assert spec["layers"]["layer1.0.conv1"] == [40, 64, 3, 3]
    assert spec["layers"]["layer1.0.bn1"] == [40]

    rebuilt = build_from_spec(spec).eval()
    rebuilt.load_state_dict(narrowed.state_dict())  # strict: same names and shapes
    assert [n for n, _ in rebuilt.named_modules()] == [n for n, _ in narrowed.named_modules()]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), narrowed(x))
    assert model_spec(rebuilt) == spec
