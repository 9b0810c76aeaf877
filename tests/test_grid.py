"""The explanation grid through the real explain stage (DALI, real checkpoints, Parquet) on
tiny synthetic shards, and its configuration checks."""
import dataclasses

import numpy as np
import polars as pl
import pytest
import torch

from explanations.stage import explain_hash, explain_task, is_done
from explanations.grid import read_faithfulness
from explanations.methods import METHODS, explain
from explanations.metrics import METRICS, random_maps
from explanations.metrics.deletion import deletion_insertion
from core.results import read_table, write_rows
from training.checkpoint import load_checkpoint
from core.config import ConfigError, ExperimentConfig
from pipeline.validation import config_problems
from tests.explain_setup import clip_batch, fresh_root


def test_small_grid_through_the_explain_stage(explain_experiment, tmp_path):
    cfg = fresh_root(explain_experiment, tmp_path, methods=list(METHODS), metrics=list(METRICS), ig_steps=4,
                     smoothgrad_samples=2, deletion_steps=4, randomisation_clips=1, figure_videos=[])
    assert explain_task(cfg.to_dict(), "temporal", 1, 1) == 2  # 2 clips (max_videos 2)
    grid = read_table(cfg.paths.results, "faithfulness")
    irof = read_table(cfg.paths.results, "irof")
    per_clip = len(METHODS) * (len(METRICS) - 1)
    assert grid.height == 2 * per_clip + len(METHODS), "randomisation on the first clip only"
    assert grid.filter(pl.col("metric") == "randomisation")["score_random"].is_null().all()
    # the study's pair is the irof table's score and control
    study = grid.filter((pl.col("method") == "vanilla_gradient") & (pl.col("metric") == "irof"))
    joined = study.join(irof, on=["video", "clip"])
    np.testing.assert_array_equal(joined["score"], joined["irof"])
    np.testing.assert_array_equal(joined["score_random"], joined["irof_random"])
    # a metric's random control is the clip's, whatever the method
    controls = grid.filter(pl.col("metric") != "randomisation").group_by("video", "clip", "metric").agg(
        pl.col("score_random").n_unique().alias("distinct"))
    assert (controls["distinct"] == 1).all()
    assert grid["score"].is_not_null().all() and (grid["stream"] == "temporal").all()
    # one row recomputed outside the stage: Grad-CAM's deletion AUC of a clip, and its control
    row = grid.filter((pl.col("method") == "grad_cam") & (pl.col("metric") == "deletion")).row(0, named=True)
    x, _ = clip_batch(cfg, "temporal", row["video"], row["clip"])
    model = load_checkpoint(cfg.paths.checkpoint("temporal", 1, 1)).model.eval()
    target = torch.tensor([row["target"]])
    maps = explain("grad_cam", model, x, target).maps
    assert deletion_insertion(model, x, maps, target, steps=4).score[0] == pytest.approx(row["score"], rel=1e-4)
    chance = random_maps([(row["video"], row["clip"])], tuple(x.shape[2:]), cfg.experiment.seed)
    assert deletion_insertion(model, x, chance, target, steps=4).score[0] == pytest.approx(row["score_random"], rel=1e-4)
    # done; other methods or metrics are another explanation: explained again
    assert is_done(cfg, "temporal", 1, 1)
    fewer = dataclasses.replace(cfg, explain=dataclasses.replace(cfg.explain, metrics=["irof", "road"]))
    assert explain_hash(fewer) != explain_hash(cfg) and not is_done(fewer, "temporal", 1, 1)


def test_older_irof_rows_read_as_the_study_pair(tmp_path):
    row = dict(experiment="e", stream="spatial", run=1, step=0, prune_ratio=0.0, video="v_A_g01_c01", clip=3,
               label=1, target=1, predicted=1, method="vanilla_gradient_max", irof=2.5, n_segments=40,
               seconds=0.1, target_rule="predicted", correct=True, explain_hash="h", checkpoint_sha256="s")
    write_rows(tmp_path, "irof", [row], partition="spatial/run1/step0")
    read = read_faithfulness(tmp_path)
    assert read.select("method", "reduce", "metric", "score", "chain").row(0) == \
        ("vanilla_gradient", "max", "irof", 2.5, "slimming")
    grid_row = {k: v for k, v in row.items() if k not in ("method", "irof", "n_segments")}
    write_rows(tmp_path, "faithfulness", [dict(grid_row, method="vanilla_gradient", reduce="max", metric="irof",
                                               score=3.0, score_random=1.0)], partition="spatial/run1/step0")
    assert read_faithfulness(tmp_path)["score"].to_list() == [3.0], "the faithfulness row wins"


def test_bad_methods_and_metrics_are_refused_naming_the_allowed_values():
    with pytest.raises(ConfigError, match=r"explain.methods\[1\]: 'lime' is not one of \['vanilla_gradient', "
                                          r"'integrated_gradients', 'smoothgrad', 'grad_cam'\]"):
        ExperimentConfig.from_dict({"explain": {"methods": ["grad_cam", "lime"]}})
    with pytest.raises(ConfigError, match=r"explain.metrics\[0\]: 'aopc' is not one of \['irof', 'road'"):
        ExperimentConfig.from_dict({"explain": {"metrics": ["aopc"]}})
    problems = config_problems(ExperimentConfig.from_dict({"explain": {"metrics": [], "methods": ["smoothgrad"] * 2}}))
    assert any("explain.metrics: [] is not allowed" in p for p in problems)
    assert any("explain.methods: ['smoothgrad', 'smoothgrad'] is not allowed" in p for p in problems)
    with pytest.raises(ConfigError, match=r"explain.randomisation_clips: 0 is not allowed \(must be > 0\)"):
        ExperimentConfig.from_dict({"explain": {"randomisation_clips": 0}})


GRID_SET = ["explain.methods=[vanilla_gradient,integrated_gradients,smoothgrad,grad_cam]",
            "explain.metrics=[irof,road,deletion,insertion,randomisation]"]  # docs/explanations.md


@pytest.mark.parametrize("config", ["ucf101_split3.yaml", "demo.yaml"])
def test_study_configs_keep_the_pair_and_the_documented_set_line_runs_the_grid(config):
    from pathlib import Path

    from core.overrides import load_config
    path = Path(__file__).parents[1] / "ray_configs" / config
    study = load_config(path)
    assert (study.explain.methods, study.explain.metrics) == (["vanilla_gradient"], ["irof"])
    grid = load_config(path, GRID_SET)
    assert grid.explain.methods == list(METHODS) and grid.explain.metrics == list(METRICS)
    assert not config_problems(grid) or all("explain." not in p for p in config_problems(grid))
    assert GRID_SET[0] in Path(__file__).parents[1].joinpath("docs", "explanations.md").read_text()


def test_the_plan_states_the_grid_cost():
    from pipeline.preflight import stage_work
    study = ExperimentConfig.from_dict({})
    assert "the study's pair" in "".join(stage_work(study, ["explain"]))
    grid = ExperimentConfig.from_dict({"explain": {"methods": list(METHODS), "metrics": list(METRICS),
                                                   "randomisation_clips": 3}})
    line = "".join(stage_work(grid, ["explain"]))
    assert "4 methods × 5 metrics per clip" in line and "randomisation: 3 clips per model" in line


def test_segments_are_computed_once_per_clip_and_recomputed_for_another_input(tmp_path):
    from explanations.irof import slic_segments
    from explanations.segments import cached_segments
    from tests.tiny_models import smooth_images
    x = smooth_images(2, 3, 32, seed=0)
    clips = [("v_A_g01_c01", 0), ("v_B_g01_c01", 2)]
    first = cached_segments(tmp_path, clips, x)
    np.testing.assert_array_equal(first, slic_segments(x))
    path = tmp_path / "v_A_g01_c01__000.npz"
    with np.load(path) as npz:
        digest = str(npz["input_sha256"])
    np.savez(path, segments=np.full((32, 32), 7), input_sha256=np.str_(digest))  # a marker, same input
    assert (cached_segments(tmp_path, clips, x)[0] == 7).all(), "the stored segments are reused"
    other = x.copy()
    other[0] += 1.0
    np.testing.assert_array_equal(cached_segments(tmp_path, clips, other)[0], slic_segments(other[:1])[0])
