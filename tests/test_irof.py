import re

import numpy as np
import pytest
import torch

from explanations.irof import irof, quantus_irof, slic_segments
from tests.tiny_models import DecisiveRegionModel, small_cnn, smooth_images


@pytest.mark.parametrize("channels", [3, 20])
@pytest.mark.parametrize("batch", [1, 2, 5])
def test_equals_quantus_irof(channels, batch):
    model = small_cnn(channels, seed=batch)
    x = smooth_images(batch, channels, 32, seed=channels + batch).astype(np.float64)
    rng = np.random.default_rng(batch)
    attributions = rng.random((batch, 32, 32))
    labels = rng.integers(0, 5, batch)
    # Quantus runs the whole batch at once: its baseline is that batch's mean
    expected = quantus_irof(model, x, attributions[:, None], labels, batch_size=batch)
    ours = irof(model, torch.from_numpy(x), attributions, labels, baseline="quantus", batch_size=64)
    np.testing.assert_allclose(ours.score, expected, rtol=0, atol=1e-5)
    if channels == 3 and batch > 1:  # (SLIC splits these 20-channel inputs into 121 segments each)
        assert len(set(ours.n_segments)) > 1, "the batch mixes segment counts"
    assert max(np.ptp(c) for c in ours.curves) > 0.05, "the curves are not trivially flat"
    np.testing.assert_allclose(ours.normalised, ours.score / ours.n_segments)
    assert [len(c) for c in ours.curves] == ours.n_segments.tolist()


def test_per_image_mean_does_not_depend_on_the_batch():
    model = small_cnn(20, seed=7, float64=False)
    x = torch.from_numpy(smooth_images(4, 20, 32, seed=1))
    attributions = torch.rand(4, 20, 32, 32)
    labels = torch.tensor([0, 1, 2, 3])
    together = irof(model, x, attributions, labels, batch_size=7)
    assert np.all(np.isfinite(together.score)) and max(np.ptp(c) for c in together.curves) > 0.05
    for i in range(4):
        alone = irof(model, x[i:i + 1], attributions[i:i + 1], labels[i:i + 1], batch_size=5)
        np.testing.assert_allclose(alone.score, together.score[i:i + 1], rtol=1e-5)
    quantus_mode = irof(model, x, attributions, labels, baseline="quantus")
    assert not np.allclose(quantus_mode.score, together.score), "the two baselines differ"


class InputIgnoringModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.tensor([0.3, -1.0, 2.0]))

    def forward(self, x):
        return self.logits.expand(len(x), -1) + 0 * x.sum()


def test_model_that_ignores_its_input_gives_the_flat_curve_value():
    x = torch.from_numpy(smooth_images(3, 3, 32, seed=4))
    result = irof(InputIgnoringModel(), x, torch.rand(3, 32, 32), [0, 1, 2])
    for curve in result.curves:
        np.testing.assert_allclose(curve, 1.0)
    # n - trapz(ones(n)) = n - (n - 1)
    np.testing.assert_allclose(result.score, 1.0)
    np.testing.assert_allclose(result.normalised, 1.0 / result.n_segments)


def grid_segments(n, size=32, cell=8):
    rows = np.arange(size) // cell
    grid = rows[:, None] * (size // cell) + rows[None, :]
    return np.broadcast_to(grid, (n, size, size)).copy()


def test_decisive_region_first_scores_higher_than_random():
    x = torch.zeros(4, 3, 32, 32)
    x[:, :, :8, :8] = 2.0  # the evidence: removing it (fill = image mean 0.125) flips class 1
    segments = grid_segments(4)
    decisive = torch.zeros(4, 32, 32)
    decisive[:, :8, :8] = 1.0
    random = torch.rand(4, 32, 32)
    random[:, :8, :8] = 0.0  # the decisive block is never first at random
    model, labels = DecisiveRegionModel(), [1, 1, 1, 1]
    good = irof(model, x, decisive, labels, segments=segments)
    bad = irof(model, x, random, labels, segments=segments)
    assert np.all(good.score > bad.score)
    # known answer: p1 = sigmoid(4 * mean of block) is sigmoid(8) before removal and
    # sigmoid(0.5) after, at every step from the first on for the decisive ranking
    ratio = torch.sigmoid(torch.tensor(0.5)).item() / torch.sigmoid(torch.tensor(8.0)).item()
    np.testing.assert_allclose(good.curves[0], ratio, rtol=1e-6)
    np.testing.assert_allclose(good.score, 16 - 15 * ratio, rtol=1e-6)


def test_given_segments_equal_computed_slic():
    model = small_cnn(3, seed=2, float64=False)
    x = smooth_images(2, 3, 32, seed=9)
    a, labels = np.random.default_rng(0).random((2, 3, 32, 32)), [1, 4]
    computed = irof(model, x, a, labels)
    given = irof(model, x, a, labels, segments=slic_segments(x))
    np.testing.assert_array_equal(computed.score, given.score)


def test_bad_input_is_named():
    model, x = InputIgnoringModel(), torch.zeros(2, 3, 16, 16)
    with pytest.raises(ValueError, match="attributions of shape"):
        irof(model, x, torch.zeros(2, 16, 15), [0, 1])
    with pytest.raises(ValueError, match="sample 0 has 1 segment"):
        irof(model, x, torch.zeros(2, 16, 16), [0, 1], segments=np.zeros((2, 16, 16), int))
    with pytest.raises(ValueError, match="baseline"):
        irof(model, x, torch.zeros(2, 16, 16), [0, 1], baseline="black")
    with pytest.raises(ValueError, match="3 targets for 2 inputs"):
        irof(model, x, torch.zeros(2, 16, 16), [0, 1, 2])


@pytest.mark.cuda
def test_cuda_matches_cpu():
    model = small_cnn(20, seed=5)
    x = torch.from_numpy(smooth_images(3, 20, 32, seed=3)).double()
    a, labels = torch.rand(3, 32, 32), torch.tensor([0, 2, 4])
    cpu = irof(model, x, a, labels)
    gpu = irof(model.cuda(), x.cuda(), a.cuda(), labels.cuda())
    np.testing.assert_allclose(gpu.score, cpu.score, rtol=1e-9)
    np.testing.assert_array_equal(gpu.n_segments, cpu.n_segments)


# --- batch_size="auto" (issue #21): the forward batch is timed, never changes the scores -------

import explanations.irof as irof_module  # noqa: E402
from explanations.irof import BatchCalibration, auto_batch_sizes, clear_auto_batch_sizes  # noqa: E402


class BatchSizeRecorder(torch.nn.Module):
    """The model, recording the size of every batch it is called with."""

    def __init__(self, model):
        super().__init__()
        self.model, self.sizes = model, []

    def forward(self, x):
        self.sizes.append(len(x))
        return self.model(x)


@pytest.fixture
def fresh_calibration(monkeypatch):
    """No calibration left over from other tests, and small candidates, so a test's few inputs
    go through the whole search; the stop rule disabled (timings of a tiny model are noise)."""
    clear_auto_batch_sizes()
    monkeypatch.setitem(irof_module.AUTO_CANDIDATES, "cpu", (8, 16, 32))
    monkeypatch.setattr(irof_module, "AUTO_STOP", float("inf"))
    yield
    clear_auto_batch_sizes()


def test_auto_batch_gives_the_scores_of_a_fixed_batch(fresh_calibration):
    model = BatchSizeRecorder(small_cnn(3, seed=4))
    x = smooth_images(3, 3, 64, seed=2)
    a, labels = np.random.default_rng(3).random((3, 64, 64)), [0, 3, 1]
    fixed = irof(model, x, a, labels, batch_size=64, baseline="quantus")
    assert fixed.n_segments.sum() + 3 >= 2 * (8 + 16 + 32), "enough inputs for the whole search"
    model.sizes.clear()
    calibrating = irof(model, x, a, labels, baseline="quantus")  # "auto" is the default
    assert model.sizes[:6] == [8, 8, 16, 16, 32, 32], model.sizes
    (choice,) = auto_batch_sizes().values()
    assert choice in (8, 16, 32)
    model.sizes.clear()
    chosen = irof(model, x, a, labels, batch_size="auto", baseline="quantus")
    assert set(model.sizes[:-1]) == {choice}, "the cached choice is used"
    assert model.sizes[-1] <= choice and model.sizes[-1] % 8 == 0, "a last partial batch padded to 8s"
    for result in (calibrating, chosen):
        np.testing.assert_array_equal(result.score, fixed.score)
        for c, f in zip(result.curves, fixed.curves):
            np.testing.assert_array_equal(c, f)


def test_cpu_scores_are_bit_identical_whatever_the_batch(fresh_calibration):
    """A float32 ResNet: batches padded to multiples of 8 give every input the same logits, so
    no batch size (nor the calibration's timing) changes a score in the last bit."""
    import torchvision
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=7).eval()
    x = smooth_images(2, 3, 32, seed=4)
    a, labels = np.random.default_rng(5).random((2, 32, 32)), [1, 6]
    reference = irof(model, x, a, labels, batch_size=256)
    for batch in (1, 3, 5, 8, 13, 40, "auto", "auto"):  # 1 differed in the 5th digit before padding
        result = irof(model, x, a, labels, batch_size=batch)
        np.testing.assert_array_equal(result.score, reference.score, err_msg=f"batch {batch}")


def test_auto_batch_is_cached_per_model_input_shape_and_device(fresh_calibration, monkeypatch):
    monkeypatch.setattr(irof_module, "AUTO_TIMINGS", 1)
    a3 = np.random.default_rng(0).random((3, 48, 48))
    irof(small_cnn(3, seed=1), smooth_images(3, 3, 48, seed=1), a3, [0, 1, 2])
    irof(small_cnn(3, seed=2), smooth_images(3, 3, 48, seed=5), a3, [0, 1, 2])  # same architecture
    assert len(auto_batch_sizes()) == 1
    irof(small_cnn(20, seed=1), smooth_images(3, 20, 48, seed=1), a3, [0, 1, 2])  # another model
    a64 = np.random.default_rng(0).random((3, 64, 64))
    irof(small_cnn(3, seed=1), smooth_images(3, 3, 64, seed=1), a64, [0, 1, 2])  # another input size
    assert len(auto_batch_sizes()) == 3
    assert all(choice in (8, 16, 32) for choice in auto_batch_sizes().values()), auto_batch_sizes()


def test_calibration_picks_the_fastest_candidate_and_stops_when_slower():
    cal = BatchCalibration((8, 16, 32, 64, 128))
    per_input = {8: 1.0, 16: 0.8, 32: 0.7, 64: 0.9}  # 64 is > 10 % slower than 32: stop there
    while cal.choice is None:
        batch = cal.next_batch()
        cal.record(batch, batch, per_input[batch] * batch)
    assert cal.choice == 32 and 128 not in cal.times
    assert cal.record(32, 32, 1.0) is False and cal.next_batch() == 32


def test_calibration_ignores_partial_batches_and_settles_when_calls_are_too_small():
    cal = BatchCalibration((8, 16))
    assert cal.record(8, 5, 1.0) is False and cal.next_batch() == 8  # a last partial chunk
    cal.record(8, 8, 8.0), cal.record(8, 8, 6.0)
    assert cal.next_batch() == 16 and cal.choice is None
    cal.settle()  # e.g. every later call has fewer than 16 inputs
    assert cal.choice == 8


def test_settle_without_timings_keeps_the_batch_being_tried(fresh_calibration):
    model = BatchSizeRecorder(small_cnn(3, seed=4))
    x, a = smooth_images(1, 3, 16, seed=2), np.random.default_rng(3).random((1, 16, 16))
    two = np.arange(256).reshape(1, 16, 16) % 2  # 2 segments: 3 inputs, never a whole batch of 8
    assert irof(model, x, a, [0], segments=two).n_segments[0] == 2
    assert model.sizes == [8] and list(auto_batch_sizes().values()) == [8]  # padded from 3


@pytest.mark.parametrize("bad", [0, -1, 2.5, "big", "AUTO", None, True])
def test_bad_batch_size_is_named(bad):
    model, x = InputIgnoringModel(), torch.zeros(2, 3, 16, 16)
    with pytest.raises(ValueError, match=r"batch_size must be 'auto' or a positive int \(inputs per forward "
                                         rf"pass\), got {re.escape(repr(bad))}$"):
        irof(model, x, torch.zeros(2, 16, 16), [0, 1], batch_size=bad)
