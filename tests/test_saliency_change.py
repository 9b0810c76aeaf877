"""Known answers of the saliency-change measures (scipy's spearmanr as the reference)."""
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from explanations.saliency_change import TOP_FRACTION, spearman, top_iou, top_mask


def test_identical_maps_give_one_and_one():
    maps = np.random.default_rng(0).random((3, 12, 10))
    assert spearman(maps, maps) == pytest.approx([1, 1, 1])
    assert top_iou(maps, maps).tolist() == [1, 1, 1]
    assert spearman(torch.tensor(maps), torch.tensor(maps)) == pytest.approx([1, 1, 1])  # tensors too


def test_reversed_map_gives_minus_one_and_zero():
    ramp = np.arange(100.0).reshape(1, 10, 10)
    assert spearman(ramp, -ramp) == pytest.approx([-1])
    assert top_iou(ramp, -ramp).tolist() == [0.0]  # top ten pixels 90..99 against 0..9


def test_permuted_map_against_scipy_and_sets():
    rng = np.random.default_rng(1)
    base = rng.random((4, 20, 20))
    other = np.stack([m.ravel()[rng.permutation(400)].reshape(20, 20) for m in base])
    other[0] = base[0]
    other[1, :10] = base[1, :10]  # half of the rows kept in place
    expected_rho = [spearmanr(b.ravel(), o.ravel())[0] for b, o in zip(base, other)]
    assert spearman(base, other) == pytest.approx(expected_rho, abs=1e-12)
    expected_iou = []
    for b, o in zip(base, other):  # sets of the 40 largest pixels, by sorting in plain Python
        top_b = set(sorted(range(400), key=lambda i: -b.ravel()[i])[:40])
        top_o = set(sorted(range(400), key=lambda i: -o.ravel()[i])[:40])
        expected_iou.append(len(top_b & top_o) / len(top_b | top_o))
    assert top_iou(base, other).tolist() == pytest.approx(expected_iou)
    assert expected_iou[0] == 1.0 and 0 < expected_iou[2] < 0.5


def test_known_swap_and_ties():
    base = np.arange(10.0).reshape(1, 2, 5)  # the top 10 % of 10 pixels is one pixel: index 9
    swapped = base.copy()
    swapped[0, 1, 4], swapped[0, 0, 0] = 0.0, 9.0  # the largest and smallest pixels exchanged
    # ranks d = ±9 on two pixels: rho = 1 − 6·(81 + 81) / (10 · 99)
    assert spearman(base, swapped) == pytest.approx([1 - 6 * 162 / 990])
    assert spearmanr(base.ravel(), swapped.ravel())[0] == pytest.approx(1 - 6 * 162 / 990)
    assert top_iou(base, swapped).tolist() == [0.0]
    ties = np.array([[[1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]])
    assert spearman(ties, base.reshape(1, 1, 10))[0] == pytest.approx(
        spearmanr(ties.ravel(), np.arange(10.0))[0])
    assert top_mask(ties).nonzero()[1].tolist() == [0]  # ties broken by pixel index
    assert np.isnan(spearman(np.zeros((1, 4, 4)), np.arange(16.0).reshape(1, 4, 4))[0])  # constant: no ranking
    assert TOP_FRACTION == 0.1
