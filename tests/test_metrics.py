"""explanations.metrics against Quantus 0.6.0 (ROAD, MPRT) and known answers (deletion/insertion,
which Quantus lacks). Tolerances: ROAD's curves are 0/1 and must match exactly; MPRT's rank
correlations to 1e-6 (float32 maps: a near-tie may rank differently)."""
import numpy as np
import pytest
import torch
import torchvision

from explanations.methods import explain
from explanations.metrics import METRICS, MetricSettings, random_maps, score
from explanations.metrics.deletion import deletion_insertion
from explanations.metrics.randomisation import randomisation, stage_of
from explanations.metrics.road import road
from tests.tiny_models import AsFloat64, DecisiveRegionModel, small_cnn, smooth_images


def linear_model(channels, size, classes=5, seed=0):
    """Logits linear in every pixel (float64): imputing pixels moves them, predictions flip."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(AsFloat64(), torch.nn.Flatten(),
                               torch.nn.Linear(channels * size * size, classes).double()).eval()


@pytest.mark.parametrize("channels", [3, 20])
def test_road_equals_quantus(channels):
    import quantus
    size, n = 32, 3
    model = linear_model(channels, size, seed=channels)
    x = smooth_images(n, channels, size, seed=channels).astype(np.float64)
    a = np.random.default_rng(channels).random((n, size, size))
    with torch.no_grad():
        target = model(torch.from_numpy(x)).argmax(1).numpy()
    percentages = [1, 9, 25, 41, 63, 87, 99]
    ours = road(model, x, a, target, percentages=percentages, noise=2.0, seed=5)  # loud: flips classes
    # Quantus, its defect avoided: the ranking only in channel 0, every other channel below it,
    # and a_size set to H * W, so its top-k entries are the top-k pixels
    ranked = np.concatenate([a[:, None], np.broadcast_to(a[:, None] - 10.0, (n, channels - 1, size, size))], 1)
    metric = quantus.ROAD(percentages=percentages, noise=2.0, normalise=False, disable_warnings=True)
    metric.a_size = size * size
    np.random.seed(5)
    expected = metric(model=model, x_batch=x, y_batch=target, a_batch=ranked, channel_first=True, device="cpu")
    np.testing.assert_array_equal(ours.curves.mean(axis=0), [expected[p] for p in percentages])
    assert 0 < ours.curves.mean() < 1, "the curves are not trivially constant"
    np.testing.assert_allclose(ours.score, ours.curves.mean(axis=1))
    quiet = road(model, x, a, target, percentages=percentages, noise=0.0)
    assert not np.array_equal(quiet.curves, ours.curves), "the noise is added"


@pytest.mark.slow  # about 60 s per case under load (a map per layer, twice)
@pytest.mark.parametrize("channels", [3, 20])
def test_randomisation_equals_quantus_per_layer(channels):
    import quantus
    torch.manual_seed(channels)  # a ResNet with one block per stage: half ResNet-18's 62 layers
    model = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1], num_classes=4)
    if channels != 3:
        model.conv1 = torch.nn.Conv2d(channels, 64, 7, 2, 3, bias=False)
    model.eval()
    x = torch.from_numpy(smooth_images(2, channels, 32, seed=1))
    target = torch.tensor([1, 3])

    def vanilla(m, inputs, targets):
        return explain("vanilla_gradient", m, torch.as_tensor(inputs), torch.as_tensor(targets)).maps

    maps = vanilla(model, x, target)
    ours = randomisation(model, x, target, maps, vanilla, granularity="module")
    metric = quantus.MPRT(disable_warnings=True)
    expected = metric(model=model, x_batch=x.numpy(), y_batch=target.numpy(), a_batch=maps[:, None].numpy(),
                      channel_first=True, device="cpu", batch_size=2,
                      explain_func=lambda model, inputs, targets, **kw: vanilla(model, inputs, targets)[:, None].numpy())
    layers = [k for k in expected if k != "original"]
    assert layers == list(ours.correlations)
    for layer in layers:
        np.testing.assert_allclose(ours.correlations[layer], expected[layer], rtol=0, atol=1e-6, err_msg=layer)
    assert np.concatenate(list(ours.correlations.values())).max() < 0.99, "randomising changes the maps"
    staged = randomisation(model, x, target, maps, vanilla)
    assert list(staged.correlations) == ["fc", "layer4.0.conv1", "layer3.0.conv1", "layer2.0.conv1",
                                         "layer1.0.conv1", "conv1"]  # each stage's first layer comes last
    for layer, values in staged.correlations.items():
        np.testing.assert_allclose(values, expected[layer], rtol=0, atol=1e-6)
    np.testing.assert_allclose(staged.score, np.mean(list(staged.correlations.values()), axis=0))
    assert [stage_of(n) for n in ("fc", "layer2.1.bn2", "bn1", "conv1")] == ["fc", "layer2", "stem", "stem"]


@pytest.mark.parametrize("method", ["vanilla_gradient", "grad_cam", "smoothgrad"])
def test_randomisation_reuses_the_unrandomised_bottom_with_the_same_maps(method):
    from explanations.methods import MethodSettings
    from explanations.metrics.prefix import reusable
    torch.manual_seed(5)
    model = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1], num_classes=4).eval()
    size = 64 if method == "grad_cam" else 32  # 64 px: Grad-CAM's layer4 map is 2 x 2
    x = torch.from_numpy(smooth_images(2, 3, size, seed=2))
    target = torch.tensor([0, 2])
    settings = MethodSettings(smoothgrad_samples=2)
    stem_runs = []
    model.conv1.register_forward_hook(lambda *_: stem_runs.append(1))  # deep copies keep the hook

    def fn(m, inputs, targets):
        return explain(method, m, inputs, targets, settings).maps

    maps = fn(model, x, target)
    runs = {}
    for reuse in (False, True):
        stem_runs.clear()
        result = randomisation(model, x, target, maps, fn, granularity="module", reuse_prefix=reuse)
        runs[reuse] = result, len(stem_runs)
    (plain, plain_stem), (reused, reused_stem) = runs[False], runs[True]
    assert list(plain.correlations) == list(reused.correlations) and len(plain.correlations) == 25
    for layer, values in plain.correlations.items():
        np.testing.assert_array_equal(reused.correlations[layer], values, err_msg=layer)  # bitwise
    assert np.isfinite(plain.score).all()
    # 25 checkpoints; reused, the stem runs once per input and stage above it (fc+layer4, layer3,
    # layer2, layer1) and at its own 2 checkpoints. Grad-CAM and SmoothGrad take the logits
    # first (no gradients): Grad-CAM's maps reuse that pass (they need no input gradient),
    # SmoothGrad's noisy batch is a second input
    per_map = 1 if method == "vanilla_gradient" else 2
    per_stage = 2 if method == "smoothgrad" else 1
    assert plain_stem == 25 * per_map and reused_stem == 4 * per_stage + 2 * per_map
    assert not reusable(small_cnn(3, seed=1, float64=False))


def test_deletion_and_insertion_known_answers():
    x = torch.zeros(2, 3, 32, 32)
    x[:, :, :8, :8] = 2.0  # class 1's evidence: sigmoid(4 * block mean) = sigmoid(8); removed: sigmoid(0)
    decisive = torch.zeros(2, 32, 32)
    decisive[:, :8, :8] = 1.0  # the 64 block pixels first: exactly step 1 of 16
    model, target = DecisiveRegionModel(), torch.tensor([1, 1])
    high, low = torch.sigmoid(torch.tensor(8.0)).item(), 0.5
    deletion = deletion_insertion(model, x, decisive, target, mode="deletion", steps=16)
    np.testing.assert_allclose(deletion.curves[0], [high] + [low] * 16, rtol=1e-6)
    np.testing.assert_allclose(deletion.score, ((high + low) / 2 + 15 * low) / 16, rtol=1e-6)
    insertion = deletion_insertion(model, x, decisive, target, mode="insertion", steps=16)
    np.testing.assert_allclose(insertion.curves[0], [low] + [high] * 16, rtol=1e-6)
    np.testing.assert_allclose(insertion.score, ((high + low) / 2 + 15 * high) / 16, rtol=1e-6)
    chance = random_maps([("v_a", 0), ("v_b", 3)], (32, 32), seed=0)
    np.testing.assert_array_equal(chance[1], random_maps([("v_b", 3)], (32, 32), seed=0)[0])
    assert np.all(deletion_insertion(model, x, chance, target, steps=16).score > deletion.score)
    assert np.all(deletion_insertion(model, x, chance, target, mode="insertion", steps=16).score < insertion.score)


def test_score_dispatches_every_metric_and_refuses_unknown_ones():
    model = small_cnn(3, seed=1, float64=False)
    x = torch.from_numpy(smooth_images(2, 3, 32, seed=2))
    maps, target = torch.rand(2, 32, 32), torch.tensor([0, 1])
    settings = MetricSettings(road_percentages=(10, 50), deletion_steps=4)
    vanilla = lambda m, xx, t: explain("vanilla_gradient", m, xx, t).maps  # noqa: E731
    for metric in METRICS:
        scores = score(metric, model, x, maps, target, settings, explain=vanilla)
        assert scores.shape == (2,) and np.all(np.isfinite(scores)), metric
    with pytest.raises(ValueError, match=r"unknown faithfulness metric 'aopc'; allowed: \['irof', 'road'"):
        score("aopc", model, x, maps, target, settings)
    with pytest.raises(ValueError, match="mode must be one of"):
        deletion_insertion(model, x, maps, target, mode="both")
