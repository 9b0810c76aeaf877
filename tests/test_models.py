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


@pytest.mark.parametrize("stream,arch", [("spatial", "resnet18"), ("temporal", "resnet50")])
def test_width_narrows_every_channel_count_and_the_model_prunes(stream, arch):
    """model.width: each channel count c becomes round(c × width) (the image's channels and the
    classes stay), residual sums still fit, the spec round trip and a prune step work on it."""
    from pruning import prune_model
    full, narrow = build_stream(stream, arch, 7), build_stream(stream, arch, 7, width=0.25)
    shapes = {name: m.weight.shape for name, m in full.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    for name, module in narrow.named_modules():
        if isinstance(module, nn.Conv2d):
            out, inp = shapes[name][:2]
            assert module.weight.shape[:2] == (round(out / 4), inp if name == "conv1" else round(inp / 4)), name
        elif isinstance(module, nn.Linear):
            assert module.weight.shape == (7, shapes[name][1] // 4)
        elif isinstance(module, nn.BatchNorm2d):
            assert module.num_features == module.weight.shape[0]
    x = torch.randn(2, narrow.conv1.in_channels, 48, 48)
    with torch.no_grad():
        assert narrow.eval()(x).shape == (2, 7)
    again = build_from_spec(model_spec(narrow))
    again.load_state_dict(narrow.state_dict())
    with torch.no_grad():
        assert torch.equal(again.eval()(x), narrow(x))
        assert prune_model(narrow, 0.2).eval()(x).shape == (2, 7)
    # torchvision's init, not nn.Conv2d's default: kaiming normal over fan-out
    conv = narrow.layer3[0].conv2
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    assert conv.weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.1)


def test_width_is_refused_outside_zero_one_and_with_pretrained_weights(tmp_path):
    from core.config import ConfigError, ExperimentConfig
    from pipeline.validation import config_problems
    with pytest.raises(ValueError, match="width"):
        build_stream("spatial", "resnet18", 7, width=0)
    with pytest.raises(ConfigError, match="model.width"):
        ExperimentConfig.from_dict({"model": {"width": 1.5}})
    cfg = ExperimentConfig.from_dict({"experiment": {"name": "w"}, "model": {"width": 0.5, "weights": "imagenet"}})
    assert any(p.startswith("model.width: 0.5 narrows") for p in config_problems(cfg, ["train"]))
