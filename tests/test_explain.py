"""The explain stage on real (tiny) shards and checkpoints, on a local Ray."""
import dataclasses
import os
import shutil

import numpy as np
import polars as pl
import pytest
import torch

from scipy.stats import spearmanr

from explanations.stage import (ExplainError, centre_clips, clip_seed, explain_model, explain_task, explain_tasks,
                              figure_map_path, run_explain_stage, select_clips, tasks_to_do)
from explanations.irof import irof, random_ranks, slic_segments
from core.results import read_table, table_path
from explanations.saliency import vanilla_gradient
from explanations.saliency_change import top_iou
from shards.format import decode_sample, sample_key
from shards.reference import crop
from shards.tarfiles import iter_shard
from training.checkpoint import load_checkpoint, save_checkpoint
from training.data import class_names, read_manifest
from training.models import build_stream
from tests.explain_setup import SIZE, clip_batch, fresh_root, make_config
from pipeline.sweep import SweepContext


def partition_mtimes(cfg):
    return {t: table_path(cfg.paths.results, "irof", f"{t[0]}/run{t[1]}/step{t[2]}").stat().st_mtime_ns
            for t in explain_tasks(cfg)}


@pytest.mark.slow
def test_stage_writes_irof_rows_and_figure_maps_and_resumes(explain_experiment, local_ray):
    cfg = explain_experiment
    ctx = SweepContext(config=cfg, paths=cfg.paths)
    run_explain_stage(cfg, ctx)

    table = read_table(cfg.paths.results, "irof")
    figure_video = cfg.explain.figure_videos[0]
    wanted = select_clips(cfg, read_manifest(cfg.paths.shards))
    assert figure_video in wanted and len(wanted) == 3
    assert table.height == 2 * 2 * len(wanted)  # streams x steps x clips
    assert set(table["video"]) == set(wanted)
    assert (table["target"] == table["predicted"]).all() and (table["target_rule"] == "predicted").all()
    assert table["correct"].to_list() == (table["predicted"] == table["label"]).to_list()
    assert (table["method"] == "vanilla_gradient_max").all()
    assert table.filter(pl.col("step") == 1)["prune_ratio"].to_list() == [0.04] * 6
    assert table.filter(pl.col("step") == 0)["prune_ratio"].to_list() == [0.0] * 6
    assert (table["n_segments"] > 1).all() and (table["seconds"] > 0).all()
    change = read_table(cfg.paths.results, "saliency_change")
    assert change.height == 2 * len(wanted) and set(change["step"]) == {1}  # streams x clips, k > 0 only

    # each row is the IROF of its own clip under its own checkpoint
    for stream, step in (("temporal", 1), ("spatial", 0)):
        row = table.filter((pl.col("stream") == stream) & (pl.col("step") == step)
                           & (pl.col("video") == figure_video)).row(0, named=True)
        model = load_checkpoint(cfg.paths.checkpoint(stream, 1, step)).model.eval()
        x, label = clip_batch(cfg, stream, figure_video, row["clip"])
        predicted = model(x).argmax(1)
        saliency = vanilla_gradient(model, x, "predicted", reduce="max")
        expected = irof(model, x, saliency, predicted)
        assert row["label"] == int(label) and row["predicted"] == int(predicted)
        assert row["n_segments"] == expected.n_segments[0]
        assert row["irof"] == pytest.approx(expected.score[0], rel=1e-4)
        if step == 1:  # against the unpruned model's map of the same clip
            base = load_checkpoint(cfg.paths.checkpoint(stream, 1, 0)).model.eval()
            base_map = vanilla_gradient(base, x, "predicted", reduce="max")
            moved = change.filter((pl.col("stream") == stream) & (pl.col("video") == figure_video)).row(0, named=True)
            assert moved["spearman"] == pytest.approx(spearmanr(base_map.flatten(), saliency.flatten())[0], abs=1e-4)
            assert moved["iou_top"] == pytest.approx(top_iou(base_map, saliency)[0], abs=0.02)
            assert moved["base_target"] == int(base(x).argmax()) and moved["target"] == row["target"]

        key = sample_key(figure_video, row["clip"])
        maps = np.load(cfg.paths.saliency / stream / "run1" / f"step{step}" / f"{key}.npz")
        np.testing.assert_allclose(maps["saliency"], saliency[0].numpy(), rtol=1e-4, atol=1e-8)
        assert maps["saliency"].dtype == np.float32 and float(maps["prune_ratio"]) == row["prune_ratio"]
        assert int(maps["label"]) == row["label"] and int(maps["predicted"]) == row["predicted"]
        assert str(maps["explain_hash"]) == row["explain_hash"] and str(maps["target_rule"]) == "predicted"
        if stream == "temporal":
            assert maps["pairs"].shape == (10, SIZE, SIZE)
            np.testing.assert_allclose(maps["pairs"].max(axis=0), maps["saliency"], rtol=1e-6)
        else:
            assert "pairs" not in maps
        # the centre frame, cropped as the model saw it
        shard = cfg.paths.shards / read_manifest(cfg.paths.shards).filter(
            pl.col("video") == figure_video)["shard"][0]
        sample = next(decode_sample(s) for s in iter_shard(shard) if s["__key__"] == key)
        expected_rgb = crop(sample.rgb.transpose(2, 0, 1), SIZE, 0.5, 0.5).transpose(1, 2, 0)
        assert maps["rgb"].dtype == np.uint8 and maps["rgb"].shape == (SIZE, SIZE, 3)
        assert np.abs(maps["rgb"].astype(int) - expected_rgb).max() <= 1

    # a second run redoes nothing, even with newer file times; another checkpoint is explained again
    before = partition_mtimes(cfg)
    newer = cfg.paths.checkpoint("spatial", 1, 1)
    os.utime(newer, ns=(before[("spatial", 1, 1, "slimming")] + 10**9,) * 2)
    run_explain_stage(cfg, ctx)
    assert partition_mtimes(cfg) == before
    model = load_checkpoint(newer).model
    with torch.no_grad():
        model.fc.bias.add_(1.0)
    save_checkpoint(newer, model, epoch=1, config=cfg, classes=class_names(read_manifest(cfg.paths.shards)),
                    extra={"step": 1, "prune_ratio": 0.04})
    run_explain_stage(cfg, ctx)
    after = partition_mtimes(cfg)
    assert [t for t in after if after[t] != before[t]] == [("spatial", 1, 1, "slimming")]


def test_clip_choice(explain_experiment):
    manifest = read_manifest(explain_experiment.paths.shards)
    wanted = select_clips(explain_experiment, manifest)
    test = manifest.filter(pl.col("subset") == "test")
    labels = dict(test.select("video", "label").iter_rows())
    chosen = [v for v in wanted if v not in explain_experiment.explain.figure_videos]
    assert len(chosen) == 2 and len({labels[v] for v in chosen}) == 2, "spread over classes"
    assert all(clips == centre_clips(5, 1) == [2] for clips in wanted.values())
    assert centre_clips(25, 1) == [12] and centre_clips(5, 2) == [1, 3] and centre_clips(3, 5) == [0, 1, 2]
    everything = dataclasses.replace(explain_experiment,
                                     explain=dataclasses.replace(explain_experiment.explain, max_videos=None))
    assert set(select_clips(everything, manifest)) == set(test["video"])


def test_bad_configs_are_named(explain_experiment, tmp_path):
    bad_video = dataclasses.replace(explain_experiment, explain=dataclasses.replace(
        explain_experiment.explain, figure_videos=["v_Nothing_g01_c01"]))
    with pytest.raises(ExplainError, match="v_Nothing_g01_c01"):
        select_clips(bad_video, read_manifest(explain_experiment.paths.shards))
    missing_step = make_config(explain_experiment.paths.root, explain_experiment.explain.figure_videos[0], steps=(0, 5))
    with pytest.raises(ExplainError, match="step5.pt"):
        run_explain_stage(missing_step, None)


def test_target_switch_on_a_misclassified_clip(explain_experiment, tmp_path):
    """A model biased towards a wrong class: ``label`` explains the true class, ``predicted`` the
    model's own; the targets, the IROF scores and the ``correct`` column follow."""
    cfg = fresh_root(explain_experiment, tmp_path, target="label", figure_videos=[])
    manifest = read_manifest(cfg.paths.shards)
    wrong = 0  # the chosen videos are of different classes: at least one is not of class 0
    model = load_checkpoint(cfg.paths.checkpoint("spatial", 1, 0)).model
    with torch.no_grad():
        model.fc.bias[wrong] += 30.0  # every clip is predicted as `wrong`
    save_checkpoint(cfg.paths.checkpoint("spatial", 1, 0), model, epoch=0, config=cfg,
                    classes=class_names(manifest))

    by_label = pl.DataFrame(explain_model(cfg, "spatial", 1, 0, device="cpu").irof)
    predicted_cfg = dataclasses.replace(cfg, explain=dataclasses.replace(cfg.explain, target="predicted"))
    by_prediction = pl.DataFrame(explain_model(predicted_cfg, "spatial", 1, 0, device="cpu").irof)

    assert (by_label["predicted"] == wrong).all() and (by_prediction["predicted"] == wrong).all()
    misclassified = by_label.filter(pl.col("label") != wrong)
    assert misclassified.height >= 1 and not misclassified["correct"].any()
    assert (misclassified["target"] == misclassified["label"]).all()
    assert (by_label["target_rule"] == "label").all() and (by_prediction["target_rule"] == "predicted").all()
    assert (by_prediction["target"] == wrong).all()
    joined = misclassified.join(by_prediction, on=["video", "clip"], suffix="_pred")
    assert (joined["irof"] != joined["irof_pred"]).all()
    # the predicted target's score is IROF of the predicted class's own saliency
    row = joined.row(0, named=True)
    x, _ = clip_batch(cfg, "spatial", row["video"], row["clip"])
    model.eval()
    expected = irof(model, x, vanilla_gradient(model, x, [wrong]), [wrong])
    assert row["irof_pred"] == pytest.approx(expected.score[0], rel=1e-4)
    # predicted-class ratios stay near 1; a true class the model rejects explodes
    assert abs(row["irof_pred"]) < abs(row["irof"])


def test_stale_explanations_are_found_by_hash_and_checkpoint_not_by_time(explain_experiment, tmp_path):
    cfg = fresh_root(explain_experiment, tmp_path)
    figure = cfg.explain.figure_videos[0]
    for step in (0, 1):
        explain_task(cfg.to_dict(), "spatial", 1, step)
    todo = set(tasks_to_do(cfg))
    assert todo == {("temporal", 1, 0, "slimming"), ("temporal", 1, 1, "slimming")}
    recorded = read_table(cfg.paths.results, "irof")
    assert recorded["checkpoint_sha256"].n_unique() == 2 and recorded["explain_hash"].n_unique() == 1

    step1 = cfg.paths.checkpoint("spatial", 1, 1)
    os.utime(step1, ns=(10**18, 10**18))  # newer file time, same content: still done
    assert set(tasks_to_do(cfg)) == todo

    classes = class_names(read_manifest(cfg.paths.shards))
    model = load_checkpoint(step1).model
    with torch.no_grad():
        model.fc.bias.add_(0.5)
    save_checkpoint(step1, model, epoch=1, config=cfg, classes=classes, extra={"step": 1, "prune_ratio": 0.04})
    assert set(tasks_to_do(cfg)) == todo | {("spatial", 1, 1, "slimming")}
    explain_task(cfg.to_dict(), "spatial", 1, 1)
    assert set(tasks_to_do(cfg)) == todo

    step0 = cfg.paths.checkpoint("spatial", 1, 0)  # a new baseline: its explanations and the change
    shutil.copy(explain_experiment.paths.checkpoint("temporal", 1, 0), step0)  # tables of later steps
    assert set(tasks_to_do(cfg)) == todo | {("spatial", 1, 0, "slimming"), ("spatial", 1, 1, "slimming")}
    shutil.copy(explain_experiment.paths.checkpoint("spatial", 1, 0), step0)  # the same bytes again: done
    assert set(tasks_to_do(cfg)) == todo

    clip = select_clips(cfg, read_manifest(cfg.paths.shards))[figure][0]
    figure_map_path(cfg, "spatial", 1, 0, figure, clip).unlink()  # a lost figure map
    assert set(tasks_to_do(cfg)) == todo | {("spatial", 1, 0, "slimming")}

    other = dataclasses.replace(cfg, explain=dataclasses.replace(cfg.explain, reduce="mean"))
    assert set(tasks_to_do(other)) == set(explain_tasks(cfg))  # other explain settings: all stale
    wider = dataclasses.replace(cfg, explain=dataclasses.replace(cfg.explain, steps=[1]))
    assert set(tasks_to_do(wider)) == {("temporal", 1, 1, "slimming")}  # explain.steps only chooses tasks


def test_chance_level_same_target_change_and_run_to_run_reference(explain_experiment, tmp_path):
    """Issue 27: ``irof_random`` is IROF of a seeded random order of the same segments; a pruned
    step's change is also measured for the unpruned model's class; run 2's step 0 is compared with
    run 1's (the run-to-run band); a control chain's checkpoint is explained under its chain."""
    cfg = fresh_root(explain_experiment, tmp_path, figure_videos=[])
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, runs=2),
                              prune=dataclasses.replace(cfg.prune, chains=["slimming", "random"]))
    classes = class_names(read_manifest(cfg.paths.shards))
    torch.manual_seed(7)
    other = build_stream("spatial", "resnet18", len(classes))
    with torch.no_grad():
        other.fc.weight.mul_(20)
    save_checkpoint(cfg.paths.checkpoint("spatial", 2, 0), other, epoch=0, config=cfg, classes=classes)
    random_step = cfg.paths.checkpoint("spatial", 1, 1, "random")
    random_step.parent.mkdir(parents=True)
    shutil.copy(cfg.paths.checkpoint("spatial", 1, 1), random_step)
    tasks = explain_tasks(cfg)
    assert ("spatial", 2, 0, "slimming") in tasks and ("temporal", 1, 1, "random") in tasks
    assert ("spatial", 1, 0, "random") not in tasks  # step 0 is the study's, shared

    reference = explain_model(cfg, "spatial", 2, 0, device="cpu")
    assert {(r["step"], r["base_run"], r["chain"]) for r in reference.change} == {(0, 1, "slimming")}
    explained = explain_model(cfg, "spatial", 1, 1, "random", device="cpu")
    assert {r["chain"] for r in explained.irof + explained.change} == {"random"}
    assert {r["base_run"] for r in explained.change} == {None}

    row = explained.irof[0]
    change = next(c for c in explained.change if (c["video"], c["clip"]) == (row["video"], row["clip"]))
    x, _ = clip_batch(cfg, "spatial", row["video"], row["clip"])
    model = load_checkpoint(random_step).model.eval()
    base = load_checkpoint(cfg.paths.checkpoint("spatial", 1, 0)).model.eval()
    saliency = vanilla_gradient(model, x, "predicted", reduce="max")
    segments = slic_segments(x.numpy())
    seed = clip_seed(cfg, row["video"], row["clip"])
    chance = irof(model, x, saliency, [row["target"]], segments=segments, random_seeds=[seed])
    assert row["irof_random"] == pytest.approx(chance.score[0], rel=1e-4)
    assert row["irof_random"] != pytest.approx(row["irof"], rel=1e-3)
    # the random order is a permutation of the segments, the same for any attribution
    ranks, n = random_ranks(segments[0], seed)
    assert sorted(np.unique(ranks)) == list(range(n)) == list(range(row["n_segments"]))
    flipped = irof(model, x, -saliency, [row["target"]], segments=segments, random_seeds=[seed])
    assert flipped.score[0] == chance.score[0]
    # same target: the pruned model's map of the unpruned model's class
    base_target = int(base(x).argmax())
    same = vanilla_gradient(model, x, [base_target], reduce="max")
    base_map = vanilla_gradient(base, x, "predicted", reduce="max")
    assert change["base_target"] == base_target
    assert change["spearman_same"] == pytest.approx(spearmanr(base_map.flatten(), same.flatten())[0], abs=1e-4)
    assert change["prediction_changed"] == (int(model(x).argmax()) != base_target)

    # the run-to-run row of the same clip: run 2's map against run 1's
    ref = next(c for c in reference.change if (c["video"], c["clip"]) == (row["video"], row["clip"]))
    other_map = vanilla_gradient(other.eval(), x, "predicted", reduce="max")
    assert ref["spearman"] == pytest.approx(spearmanr(base_map.flatten(), other_map.flatten())[0], abs=1e-4)
