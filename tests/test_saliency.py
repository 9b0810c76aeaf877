import pytest
import torch
from captum.attr import Saliency

from explanations.saliency import flow_pair_maps, input_gradient, reduce_channels, vanilla_gradient


def captum_reference(model, x, target, reduce):
    grad = Saliency(model).attribute(x.clone(), target=target, abs=True)
    return grad if reduce == "none" else getattr(grad, "amax" if reduce == "max" else reduce)(dim=1)


@pytest.mark.parametrize("in_channels", [3, 20])
@pytest.mark.parametrize("reduce", ["max", "mean", "sum", "none"])
def test_equals_captum_saliency(random_resnet18, in_channels, reduce):
    model = random_resnet18(in_channels, num_classes=7, seed=in_channels)
    torch.manual_seed(1)
    x = torch.randn(4, in_channels, 32, 32)
    labels = torch.tensor([6, 0, 3, 3])
    ours = vanilla_gradient(model, x, labels, reduce=reduce)
    expected = captum_reference(model, x, labels, reduce)
    assert ours.shape == expected.shape
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-7)
    assert ours.abs().sum() > 0


def test_no_gradient_leaks_between_samples(random_resnet18):
    model = random_resnet18(20, seed=3).train()  # training mode on entry must not couple samples
    torch.manual_seed(2)
    x = torch.randn(5, 20, 32, 32)
    labels = torch.tensor([0, 1, 2, 3, 4])
    batched = vanilla_gradient(model, x, labels, reduce="none")
    for i in range(len(x)):
        alone = vanilla_gradient(model, x[i:i + 1], labels[i:i + 1], reduce="none")
        torch.testing.assert_close(batched[i:i + 1], alone, rtol=1e-4, atol=1e-5 * float(alone.max()))
    assert model.training, "the caller's mode is restored"
    assert all(p.grad is None for p in model.parameters()), "parameter gradients untouched"


class ChannelClassifier(torch.nn.Module):
    """Class c's score is w_c times the mean of input channel c: the gradient for target c is
    non-zero on channel c only, so a map shows which class was explained."""

    def __init__(self, classes: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.arange(1.0, classes + 1.0))

    def forward(self, x):
        return x.mean(dim=(2, 3)) * self.weight


def test_target_follows_the_labels():
    model = ChannelClassifier(4)
    x = torch.rand(4, 4, 8, 8)
    labels = torch.tensor([2, 0, 3, 1])
    grad = vanilla_gradient(model, x, labels, reduce="none")
    explained = grad.sum(dim=(2, 3)).argmax(dim=1)
    assert explained.tolist() == labels.tolist()
    # known value: d(w_c * mean x_c)/dx = w_c / (H*W) on channel c
    torch.testing.assert_close(grad[0, 2], torch.full((8, 8), 3.0 / 64))


def test_predicted_target():
    model = ChannelClassifier(3)
    x = torch.zeros(2, 3, 4, 4)
    x[0, 1] = 5.0  # sample 0 predicts class 1
    x[1, 2] = 5.0  # sample 1 predicts class 2
    _, logits, target = input_gradient(model, x, "predicted")
    assert target.tolist() == [1, 2] == logits.argmax(1).tolist()
    maps = vanilla_gradient(model, x, "predicted", reduce="none")
    assert maps.sum(dim=(2, 3)).argmax(dim=1).tolist() == [1, 2]


def test_flow_pair_maps_pair_x_and_y_of_a_step():
    grad = torch.zeros(1, 20, 4, 4)
    grad[0, 3] = 1.0     # x-field of step 3
    grad[0, 13] = 2.0    # y-field of step 3
    grad[0, 7, 0, 0] = 4.0
    pairs = flow_pair_maps(grad, "max")
    assert pairs.shape == (1, 10, 4, 4)
    assert torch.all(pairs[0, 3] == 2.0)
    assert pairs[0, 7, 0, 0] == 4.0 and pairs[0, 7].sum() == 4.0
    assert torch.all(flow_pair_maps(grad, "sum")[0, 3] == 3.0)
    # the whole-stack map is the same reduction over all 20 channels
    assert torch.equal(reduce_channels(grad, "max"), flow_pair_maps(grad, "max").amax(1))


def test_bad_arguments_are_named():
    model = ChannelClassifier(3)
    with pytest.raises(ValueError, match="reduce"):
        vanilla_gradient(model, torch.rand(1, 3, 4, 4), [0], reduce="median")
    with pytest.raises(ValueError, match="predicted"):
        vanilla_gradient(model, torch.rand(1, 3, 4, 4), "label")
    with pytest.raises(ValueError, match="2 targets for a batch of 1"):
        vanilla_gradient(model, torch.rand(1, 3, 4, 4), [0, 1])


@pytest.mark.cuda
def test_cuda_matches_cpu(random_resnet18, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # full float32 convolutions
    model = random_resnet18(20, seed=4)
    x = torch.randn(3, 20, 32, 32)
    labels = torch.tensor([1, 2, 0])
    cpu = vanilla_gradient(model, x, labels)
    gpu = vanilla_gradient(model.cuda(), x.cuda(), labels.cuda())
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-6)
