"""The explain stage on real (tiny) shards and checkpoints, on a local Ray."""
import dataclasses
import os

import numpy as np
import polars as pl
import pytest
import ray
import torch

from analysis.explain import ExplainError, centre_clips, explain_tasks, run_explain_stage, select_clips
from analysis.irof import irof
from analysis.results import read_table, table_path
from analysis.saliency import vanilla_gradient
from pruning import prune_model
from shards.dali import make_loader
from shards.format import decode_sample, sample_key
from shards.reference import crop
from shards.tarfiles import iter_shard
from training.checkpoint import load_checkpoint, save_checkpoint
from training.config import ExperimentConfig
from training.data import class_names, loader_config, read_manifest
from training.models import build_stream
from training.sweep import SweepContext

SIZE = 32


def make_config(root, figure_video, steps=(0, 1)):
    return ExperimentConfig.from_dict({
        "experiment": {"name": "explain-test", "root": str(root)},
        "model": {"input_size": SIZE},
        "train": {"runs": 1},
        "prune": {"steps": 1},
        "loader": {"threads": 1, "device": "cpu"},
        "explain": {"steps": list(steps), "max_videos": 2, "clips_per_video": 1,
                    "figure_videos": [figure_video], "batch_size": 4, "forward_batch": 64},
        "ray": {"num_cpus": 2, "cpus_per_trial": 1, "gpus_per_trial": 0},
    })


@pytest.fixture(scope="module")
def experiment(synthetic_shards, tmp_path_factory):
    """Shards linked into a fresh experiment root, and random step-0 and pruned step-1
    checkpoints of both streams."""
    root = tmp_path_factory.mktemp("explain")
    (root / "shards").mkdir()
    (root / "shards" / "split1").symlink_to(synthetic_shards, target_is_directory=True)
    manifest = read_manifest(synthetic_shards)
    classes = class_names(manifest)
    figure_video = manifest.filter(pl.col("subset") == "test").sort("video")["video"][-1]
    cfg = make_config(root, figure_video)
    for seed, stream in enumerate(("spatial", "temporal")):
        torch.manual_seed(seed)
        model = build_stream(stream, "resnet18", len(classes))
        with torch.no_grad():
            model.fc.weight.mul_(20)  # confident outputs: IROF curves far from flat
        save_checkpoint(cfg.paths.checkpoint(stream, 1, 0), model, epoch=0, config=cfg, classes=classes)
        save_checkpoint(cfg.paths.checkpoint(stream, 1, 1), prune_model(model, 0.04), epoch=1, config=cfg,
                        classes=classes, extra={"step": 1, "prune_ratio": 0.04})
    return cfg


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def clip_batch(cfg, stream, video, clip):
    """The clip through the DALI eval pipeline, read independently of the stage."""
    lcfg = dataclasses.replace(loader_config(cfg, stream, train=False), batch_size=8)
    for batch in make_loader(cfg.paths.shards / "test", lcfg):
        for i, key in enumerate(zip(batch["video"], batch["clip"].tolist())):
            if key == (video, clip):
                return batch["x"][i:i + 1], batch["label"][i:i + 1]
    raise AssertionError(f"{video} clip {clip} not found")


def partition_mtimes(cfg):
    return {t: table_path(cfg.paths.results, "irof", f"{t[0]}/run{t[1]}/step{t[2]}").stat().st_mtime_ns
            for t in explain_tasks(cfg)}


@pytest.mark.slow
def test_stage_writes_irof_rows_and_figure_maps_and_resumes(experiment, local_ray):
    cfg = experiment
    ctx = SweepContext(config=cfg, paths=cfg.paths)
    run_explain_stage(cfg, ctx)

    table = read_table(cfg.paths.results, "irof")
    figure_video = cfg.explain.figure_videos[0]
    wanted = select_clips(cfg, read_manifest(cfg.paths.shards))
    assert figure_video in wanted and len(wanted) == 3
    assert table.height == 2 * 2 * len(wanted)  # streams x steps x clips
    assert set(table["video"]) == set(wanted)
    assert (table["target"] == table["label"]).all()
    assert (table["method"] == "vanilla_gradient_max").all()
    assert table.filter(pl.col("step") == 1)["prune_ratio"].to_list() == [0.04] * 6
    assert table.filter(pl.col("step") == 0)["prune_ratio"].to_list() == [0.0] * 6
    assert (table["n_segments"] > 1).all() and (table["seconds"] > 0).all()

    # each row is the IROF of its own clip under its own checkpoint
    for stream, step in (("temporal", 1), ("spatial", 0)):
        row = table.filter((pl.col("stream") == stream) & (pl.col("step") == step)
                           & (pl.col("video") == figure_video)).row(0, named=True)
        model = load_checkpoint(cfg.paths.checkpoint(stream, 1, step)).model.eval()
        x, label = clip_batch(cfg, stream, figure_video, row["clip"])
        saliency = vanilla_gradient(model, x, label, reduce="max")
        expected = irof(model, x, saliency, label)
        assert row["label"] == int(label) and row["predicted"] == int(model(x).argmax())
        assert row["n_segments"] == expected.n_segments[0]
        assert row["irof"] == pytest.approx(expected.score[0], rel=1e-4)

        key = sample_key(figure_video, row["clip"])
        maps = np.load(cfg.paths.saliency / stream / "run1" / f"step{step}" / f"{key}.npz")
        np.testing.assert_allclose(maps["saliency"], saliency[0].numpy(), rtol=1e-4, atol=1e-8)
        assert maps["saliency"].dtype == np.float32 and float(maps["prune_ratio"]) == row["prune_ratio"]
        assert int(maps["label"]) == row["label"] and int(maps["predicted"]) == row["predicted"]
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

    # a second run redoes nothing; a newer checkpoint is explained again, alone
    before = partition_mtimes(cfg)
    run_explain_stage(cfg, ctx)
    assert partition_mtimes(cfg) == before
    newer = cfg.paths.checkpoint("spatial", 1, 1)
    os.utime(newer, ns=(before[("spatial", 1, 1)] + 10**9,) * 2)
    run_explain_stage(cfg, ctx)
    after = partition_mtimes(cfg)
    assert [t for t in after if after[t] != before[t]] == [("spatial", 1, 1)]


def test_clip_choice(experiment):
    manifest = read_manifest(experiment.paths.shards)
    wanted = select_clips(experiment, manifest)
    test = manifest.filter(pl.col("subset") == "test")
    labels = dict(test.select("video", "label").iter_rows())
    chosen = [v for v in wanted if v not in experiment.explain.figure_videos]
    assert len(chosen) == 2 and len({labels[v] for v in chosen}) == 2, "spread over classes"
    assert all(clips == centre_clips(5, 1) == [2] for clips in wanted.values())
    assert centre_clips(25, 1) == [12] and centre_clips(5, 2) == [1, 3] and centre_clips(3, 5) == [0, 1, 2]
    everything = dataclasses.replace(experiment, explain=dataclasses.replace(experiment.explain, max_videos=None))
    assert set(select_clips(everything, manifest)) == set(test["video"])


def test_bad_configs_are_named(experiment, tmp_path):
    bad_video = dataclasses.replace(experiment, explain=dataclasses.replace(
        experiment.explain, figure_videos=["v_Nothing_g01_c01"]))
    with pytest.raises(ExplainError, match="v_Nothing_g01_c01"):
        select_clips(bad_video, read_manifest(experiment.paths.shards))
    missing_step = make_config(experiment.paths.root, experiment.explain.figure_videos[0], steps=(0, 5))
    with pytest.raises(ExplainError, match="step5.pt"):
        run_explain_stage(missing_step, None)
