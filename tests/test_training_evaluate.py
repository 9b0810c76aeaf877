"""Video-level evaluation: known answers from hand-made clip scores, and the model path."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training.evaluate import evaluate, summarise
from training.models import build_stream


def test_video_accuracy_is_the_mean_softmax_over_clips():
    # video a (label 0): clips vote 1, 0, 0 -> mean [0.5, 0.4, 0.1] -> class 0, right
    # video b (label 2): clips vote 1, 2 but the 1-vote is confident -> mean [0.05, 0.55, 0.4] -> wrong
    # video c (label 1): one clip, right
    probs = np.array([[0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.7, 0.2, 0.1],
                      [0.0, 0.9, 0.1], [0.1, 0.2, 0.7],
                      [0.2, 0.6, 0.2]])
    labels = np.array([0, 0, 0, 2, 2, 1])
    videos = ["a", "a", "a", "b", "b", "c"]
    r = summarise(probs, labels, videos)
    assert r.videos == ["a", "b", "c"] and r.n_videos == 3 and r.n_clips == 6
    np.testing.assert_allclose(r.video_scores[0], [0.5, 0.4, 0.1])
    np.testing.assert_allclose(r.video_scores[1], [0.05, 0.55, 0.4])
    assert r.clip_accuracy == pytest.approx(100 * 4 / 6)  # clips 2, 3, 5, 6 are right
    assert r.video_accuracy == pytest.approx(100 * 2 / 3)
    assert r.video_top5 == 100.0  # three classes: everything is in the top 5
    np.testing.assert_allclose(r.per_class, [100.0, 100.0, 0.0])
    expected_loss = -np.mean(np.log([0.1, 0.7, 0.7, 0.1, 0.7, 0.6]))
    assert r.loss == pytest.approx(expected_loss)
    row = r.accuracy_row(experiment="e", stream="spatial", run=1, seed=0, split=1)
    assert row["video_accuracy"] == r.video_accuracy and row["n_videos"] == 3 and row["step"] == 0


def test_top5_and_absent_classes():
    k = 8
    probs = np.full((2, k), 0.01)
    probs[0, [0, 1, 2, 3, 4]] = [0.5, 0.2, 0.1, 0.1, 0.05]  # true class 4 ranks 5th: in the top 5
    probs[1, [0, 1, 2, 3, 4, 5]] = [0.5, 0.2, 0.1, 0.1, 0.05, 0.02]  # true class 5 ranks 6th: out
    r = summarise(probs, np.array([4, 5]), ["x", "y"])
    assert r.video_accuracy == 0.0 and r.video_top5 == 50.0
    assert math.isnan(r.per_class[0]) and r.per_class[4] == 0.0


def test_mixed_labels_within_a_video_are_an_error():
    with pytest.raises(ValueError, match="'a' has clips with different labels"):
        summarise(np.eye(2), np.array([0, 1]), ["a", "a"])


def test_evaluate_matches_summarise_and_averages_ten_crops():
    torch.manual_seed(0)
    model = build_stream("spatial", "resnet18", 4).eval()
    x = torch.randn(6, 3, 32, 32)
    labels = torch.tensor([0, 0, 1, 1, 2, 3])
    videos = ["a", "a", "b", "b", "c", "d"]
    batches = [{"x": x[:4], "label": labels[:4], "video": videos[:4]},
               {"x": x[4:], "label": labels[4:], "video": videos[4:]}]
    r = evaluate(model, batches, 4, features=True, device="cpu")
    with torch.no_grad():
        probs = model(x).softmax(1).numpy()
    expected = summarise(probs, labels.numpy(), videos)
    np.testing.assert_allclose(r.video_scores, expected.video_scores, atol=1e-6)
    assert r.video_accuracy == expected.video_accuracy
    assert r.video_features.shape == (4, 512)
    with torch.no_grad():  # per-video mean logits = fc of the mean features (fc is affine)
        fc = model.fc(torch.as_tensor(r.video_features, dtype=torch.float32)).numpy()
        clip_logits = model(x).numpy()
    np.testing.assert_allclose(r.video_logits, fc, atol=1e-4)
    np.testing.assert_allclose(r.video_logits[0], clip_logits[:2].mean(0), atol=1e-4)

    crops = torch.stack([x, x.flip(-1)], dim=1)  # (N, 2, C, H, W)
    r2 = evaluate(model, [{"x": crops, "label": labels, "video": videos}], 4, device="cpu")
    with torch.no_grad():
        both = (model(x).softmax(1) + model(x.flip(-1)).softmax(1)).numpy() / 2
    np.testing.assert_allclose(r2.video_scores, summarise(both, labels.numpy(), videos).video_scores,
                               atol=1e-6)
