"""Late fusion on scores shaped like the synthetic set: the spatial stream knows only a
video's appearance, the temporal stream only its motion; fusion must beat both."""
from __future__ import annotations

import math

import numpy as np
import pytest

from core.config import ExperimentConfig
from training.fusion import FusionError, VideoScores, fuse, heldout_videos, load_scores, save_scores

APPEARANCES, MOTIONS = 2, 4
K = APPEARANCES * MOTIONS  # class = appearance * MOTIONS + motion, as in ingest.synthetic


def stream_scores(videos_per_class: int, seed: int, prefix: str) -> tuple[VideoScores, VideoScores]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(K), videos_per_class)
    videos = [f"{prefix}{i:03d}" for i in range(len(labels))]
    appearance, motion = labels // MOTIONS, labels % MOTIONS
    classes = np.arange(K)
    spatial = (classes // MOTIONS == appearance[:, None]) / MOTIONS  # 1/4 on the 4 same-appearance classes
    temporal = (classes % MOTIONS == motion[:, None]) / APPEARANCES  # 1/2 on the 2 same-motion classes

    def noisy(p):
        p = p + rng.uniform(0, 0.05, p.shape)
        return p / p.sum(1, keepdims=True)

    feats = lambda s: np.hstack([s, rng.normal(0, 0.01, (len(s), 4))])  # noqa: E731
    s, t = noisy(spatial), noisy(temporal)
    return (VideoScores(videos, labels, s, feats(s), np.log(s)), VideoScores(videos, labels, t, feats(t), np.log(t)))


def test_fusion_beats_each_stream():
    train = stream_scores(6, 0, "train")
    test = stream_scores(4, 1, "test")
    results = fuse(*test, *train)
    spatial_acc = 100 * np.mean(test[0].scores.argmax(1) == test[0].labels)
    temporal_acc = 100 * np.mean(test[1].scores.argmax(1) == test[1].labels)
    assert spatial_acc < 50 and temporal_acc < 75  # each stream is confused by design
    for method in ("mean", "svm_softmax", "svm_features", "svm_logits"):
        r = results[method]
        assert r.video_accuracy == 100.0, method
        assert r.video_accuracy > max(spatial_acc, temporal_acc) + 25
        assert math.isnan(r.clip_accuracy) and r.n_videos == 4 * K
    assert results["mean"].loss > 0 and math.isnan(results["svm_softmax"].loss)


def test_mean_fusion_known_answer():
    a = VideoScores(["v1", "v2"], np.array([0, 1]), np.array([[0.6, 0.4], [0.9, 0.1]]), None)
    b = VideoScores(["v1", "v2"], np.array([0, 1]), np.array([[0.2, 0.8], [0.0, 1.0]]), None)
    r = fuse(a, b, None, None, ["mean"])["mean"]
    np.testing.assert_allclose(r.video_scores, [[0.4, 0.6], [0.45, 0.55]])
    assert r.video_accuracy == 50.0  # v1 fused to class 1 (wrong), v2 to class 1 (right)
    assert r.loss == pytest.approx(-np.mean(np.log([0.4, 0.55])))


def test_scores_round_trip_and_misaligned_streams(tmp_path):
    s, t = stream_scores(2, 0, "v")
    back = load_scores(save_scores(tmp_path / "spatial" / "step0_test.npz", s))
    assert back.videos == s.videos and np.array_equal(back.scores, s.scores)
    assert np.array_equal(back.features, s.features) and np.array_equal(back.labels, s.labels)
    assert np.array_equal(back.logits, s.logits)
    assert [p.name for p in (tmp_path / "spatial").iterdir()] == ["step0_test.npz"]
    other = VideoScores(t.videos[1:], t.labels[1:], t.scores[1:], None)
    with pytest.raises(FusionError, match="test: the streams scored different videos"):
        fuse(s, other, None, None, ["mean"])
    with pytest.raises(FusionError, match="svm_softmax needs the train split"):
        fuse(s, t, None, None, ["svm_softmax"])
    with pytest.raises(FusionError, match="no scores"):
        load_scores(tmp_path / "missing.npz")


def overfit(scores: tuple[VideoScores, VideoScores]) -> tuple[VideoScores, VideoScores]:
    """What networks that memorised their training videos give on them: a spatial stream sure
    of every label, a temporal stream saying nothing (uniform) - a fit on these learns to trust
    the spatial stream alone, which on unseen videos knows only the appearance."""
    s, t = scores
    sure = np.eye(K)[s.labels] * 0.9 + 0.1 / K
    flat = np.full_like(t.scores, 1 / K)
    return (VideoScores(s.videos, s.labels, sure, np.hstack([sure, s.features[:, K:]]), np.log(sure)),
            VideoScores(t.videos, t.labels, flat, np.hstack([flat, t.features[:, K:]]), np.log(flat)))


def merged(a: VideoScores, b: VideoScores) -> VideoScores:
    return VideoScores(a.videos + b.videos, np.concatenate([a.labels, b.labels]), np.vstack([a.scores, b.scores]),
                       np.vstack([a.features, b.features]), np.vstack([a.logits, b.logits]))


def test_svms_fit_on_held_out_videos_not_on_overfit_train_scores():
    trained_on = overfit(stream_scores(12, 2, "fit"))
    held_out = stream_scores(3, 3, "val")
    train = [merged(a, b) for a, b in zip(trained_on, held_out)]
    test = stream_scores(4, 1, "test")
    methods = ["svm_softmax", "svm_logits"]
    naive = fuse(*test, *train, methods, fit_videos=set(trained_on[0].videos))  # the networks' own videos
    chosen = {}
    honest = fuse(*test, *train, methods, fit_videos=set(held_out[0].videos), svm_c=[0.01, 0.1, 1.0, 10.0],
                  chosen_c=chosen)
    for method in methods:
        assert naive[method].video_accuracy <= 50, method  # the overfit fit copies the spatial stream
        assert honest[method].video_accuracy == 100.0, method
        assert chosen[method] in (0.01, 0.1, 1.0, 10.0)
    with pytest.raises(FusionError, match="0 videos of 0 classes"):
        fuse(*test, *train, ["svm_softmax"], fit_videos={"nothing"})


def test_features_svm_converges_and_c_is_chosen_by_cross_validation():
    """Wide unscaled features (many more dimensions than videos), a large C among the candidates:
    every fit of the search converges (training.svm raises SvmError otherwise), and one C is picked."""
    rng = np.random.default_rng(5)
    train, test = stream_scores(3, 0, "train"), stream_scores(2, 1, "test")
    wide = lambda v: VideoScores(v.videos, v.labels, v.scores,  # noqa: E731
                                 np.hstack([v.features * 100, rng.normal(0, 50, (len(v.videos), 500))]), v.logits)
    chosen = {}
    results = fuse(*map(wide, test), *map(wide, train), ["svm_features"], svm_c=[0.001, 1.0, 1000.0],
                   chosen_c=chosen)
    assert chosen["svm_features"] in (0.001, 1.0, 1000.0)
    assert results["svm_features"].n_videos == 2 * K


def test_fit_on_heldout_needs_validation_videos():
    cfg = ExperimentConfig.from_dict({"train": {"val_fraction": 0.0}})
    with pytest.raises(FusionError, match="val_fraction is 0.0"):
        heldout_videos(cfg, 1)
    assert heldout_videos(ExperimentConfig.from_dict({"fusion": {"fit_on": "train"}}), 1) is None


def test_fusion_stage_fuses_each_chain_with_its_own_pruning_fields(tmp_path):
    """Issue 27: the fuse stage fuses the study's steps and each control's tested steps, each row
    in its chain with that chain's removed fractions; mean fusion has a calibration error, an SVM
    (margins, not probabilities) none."""
    from datetime import datetime, timezone

    from core.results import chain_partition, read_table, write_rows
    from training.fusion import run_fusion_stage

    cfg = ExperimentConfig.from_dict({"experiment": {"name": "f", "root": str(tmp_path)},
                                      "train": {"runs": 1, "val_fraction": 0.0},
                                      "fusion": {"methods": ["mean"]},
                                      "prune": {"steps": 1, "chains": ["slimming", "random"]}})
    test = stream_scores(2, 1, "test")
    for chain, step, removed in (("slimming", 0, 0.0), ("slimming", 1, 0.2), ("random", 1, 0.3)):
        for stream, scores in zip(("spatial", "temporal"), test):
            save_scores(cfg.paths.scores(stream, 1, step, "test", chain), scores)
            write_rows(cfg.paths.results, "accuracy", [dict(
                experiment="f", stream=stream, run=1, seed=1, step=step, prune_ratio=0.2 * step, chain=chain,
                channels_removed=removed, params_removed=removed, flops_removed=removed, split=1,
                clip_accuracy=10.0, video_accuracy=10.0, video_top5=50.0, loss=1.0, n_videos=16,
                finished_at=datetime.now(timezone.utc))],
                partition=chain_partition(chain, f"{stream}/run1/step{step}"))
    run_fusion_stage(cfg, None)
    fused = read_table(cfg.paths.results, "accuracy").filter(stream="fusion").sort("chain", "step")
    assert fused.select("chain", "step", "channels_removed").rows() == [
        ("random", 1, 0.3), ("slimming", 0, 0.0), ("slimming", 1, 0.2)]
    assert (fused["video_accuracy"] == 100.0).all() and fused["ece"].is_not_null().all()
    svm = fuse(*test, *stream_scores(6, 0, "train"), ["svm_softmax"], svm_c=1.0)["svm_softmax"]
    assert svm.ece is None
