"""explanations.methods against captum's own calls, one clip at a time (batching must not change a
map beyond float32 rounding: rtol 1e-4 of the map's largest value) and on the same seed."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from captum.attr import IntegratedGradients, LayerGradCam, NoiseTunnel, Saliency

from explanations.methods import METHODS, MethodSettings, explain

SIZE = 64  # layer4 output 2x2: Grad-CAM is not a constant


def resnet(channels, seed=0):
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(num_classes=5)
    if channels != 3:
        model.conv1 = torch.nn.Conv2d(channels, 64, 7, 2, 3, bias=False)
    return model.eval()


def clips(channels, n=3, seed=1):
    return torch.randn(n, channels, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def close(ours, reference):
    scale = reference.abs().max().item()
    assert scale > 0, "a zero reference proves nothing"
    np.testing.assert_allclose(ours.cpu().numpy(), reference.cpu().numpy(), rtol=0, atol=1e-4 * scale)


@pytest.mark.parametrize("channels", [3, 20])
def test_batched_maps_equal_captum_per_clip(channels):
    model, x = resnet(channels), clips(channels)
    settings = MethodSettings(reduce="max", ig_steps=8)
    target = torch.tensor([0, 3, 4])
    for method in ("vanilla_gradient", "integrated_gradients", "grad_cam"):
        ours = explain(method, model, x, target, settings)
        assert ours.maps.shape == (3, SIZE, SIZE)
        for i in range(3):
            xi, ti = x[i:i + 1], int(target[i])
            if method == "vanilla_gradient":
                reference = Saliency(model).attribute(xi, target=ti).amax(1)
            elif method == "integrated_gradients":
                reference = IntegratedGradients(model).attribute(
                    xi, baselines=torch.zeros_like(xi), target=ti, n_steps=8).abs().amax(1)
            else:
                cam = LayerGradCam(model, model.layer4).attribute(xi, target=ti, relu_attributions=True)
                reference = F.interpolate(cam, size=(SIZE, SIZE), mode="bilinear")[:, 0]
            close(ours.maps[i:i + 1], reference.detach())


@pytest.mark.parametrize("channels", [3, 20])
def test_smoothgrad_equals_captum_on_the_same_seed(channels):
    model, x = resnet(channels, seed=2), clips(channels, seed=3)
    settings = MethodSettings(reduce="mean", smoothgrad_samples=4, smoothgrad_sigma=0.3, seed=11,
                              internal_batch=6)  # 2 noisy copies per pass: captum's partitions
    torch.manual_seed(99)
    ours = explain("smoothgrad", model, x, "predicted", settings)
    assert torch.rand(1).item() == torch.rand(1, generator=torch.Generator().manual_seed(99)).item(), \
        "the caller's RNG state is restored"
    torch.manual_seed(11)
    reference = NoiseTunnel(Saliency(model)).attribute(
        x, nt_type="smoothgrad", nt_samples=4, nt_samples_batch_size=2, stdevs=0.3,
        target=model(x).argmax(1))
    close(ours.maps, reference.mean(1))
    plain = explain("vanilla_gradient", model, x, "predicted", settings)
    assert not torch.allclose(ours.maps, plain.maps, rtol=1e-2), "the noise changes the map"
    again = explain("smoothgrad", model, x, "predicted", settings)
    torch.testing.assert_close(again.maps, ours.maps, rtol=0, atol=0)


def test_grad_cam_is_non_negative_and_predicted_target_is_the_argmax():
    model, x = resnet(3, seed=4), clips(3, seed=5)
    result = explain("grad_cam", model, x, "predicted")
    assert (result.maps >= 0).all() and result.maps.amax() > 0
    assert result.target.tolist() == model(x).argmax(1).tolist()
    assert result.grad is None


def test_unknown_method_and_model_without_a_stage_are_named():
    with pytest.raises(ValueError, match=r"unknown explanation method 'lime'; allowed: \['vanilla_gradient'"):
        explain("lime", resnet(3), clips(3), "predicted")
    flat = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * SIZE * SIZE, 5))
    with pytest.raises(ValueError, match="grad_cam needs a ResNet with a 'layer4' stage"):
        explain("grad_cam", flat, clips(3), "predicted")
    assert METHODS[0] == "vanilla_gradient"
