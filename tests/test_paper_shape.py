"""ray_configs/paper_shape.yaml runs the paper's grid: it shares every grid key with the paper config."""
from __future__ import annotations

from pathlib import Path

from ingest.synthetic import class_names, read_class_list
from training.config import ExperimentConfig
from training.validation import config_problems

CONFIGS = Path(__file__).resolve().parents[1] / "ray_configs"
GRID = ("train.runs", "prune.steps", "prune.step_fraction", "explain.steps", "fusion.methods", "stages",
        "data.split", "model.flow_scale", "train.val_fraction", "prune.chains")


def value(cfg: ExperimentConfig, key: str):
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def test_paper_shape_shares_the_paper_grid_on_101_named_synthetic_classes():
    paper = ExperimentConfig.from_yaml(CONFIGS / "ucf101_split3.yaml")
    shape = ExperimentConfig.from_yaml(CONFIGS / "paper_shape.yaml")
    for key in GRID:
        assert value(shape, key) == value(paper, key), key
    assert (shape.train.runs, shape.prune.steps, shape.explain.steps) == (5, 17, [0, 6, 7, 14])
    assert set(shape.fusion.methods) == {"mean", "svm_softmax", "svm_features", "svm_logits"}
    assert shape.paths.root == CONFIGS.parent / "runs" / "paper_shape"  # the README says so
    synthetic = shape.data.synthetic
    assert synthetic["class_list"] == "ucf101" and synthetic["classes"] == 101
    assert class_names(101, class_list="ucf101") == read_class_list("ucf101")
    assert config_problems(shape) == []


def test_paper_and_demo_configs_run_the_controls():
    """Issue 27: the paper config and the demo run the study's chain and both controls; the demo
    has the 3 runs the report's intervals need."""
    for name in ("ucf101_split3.yaml", "demo.yaml", "paper_shape.yaml"):
        cfg = ExperimentConfig.from_yaml(CONFIGS / name)
        assert cfg.prune.chains == ["slimming", "finetune_only", "random"], name
    assert ExperimentConfig.from_yaml(CONFIGS / "demo.yaml").train.runs >= 3
