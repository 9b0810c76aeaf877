"""The shipped configs set Network Slimming's settings (sparsity in the baseline and while
fine-tuning, which BatchNorms, width rounding), and mean the same files from any working
directory (relative paths resolved against the config file). What λ does is tested in
tests/test_recipe.py (the L1 pull budget, γ driven toward zero)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from core.config import ExperimentConfig, resolve_paths
from core.overrides import load_config
from pipeline.validation import config_problems
from tests.layout import REPO

PAPER = REPO / "ray_configs" / "ucf101_split3.yaml"
DEMO = REPO / "ray_configs" / "demo.yaml"


@pytest.mark.parametrize("path", [PAPER, DEMO])
def test_both_configs_train_the_baseline_with_sparsity_and_keep_it_while_fine_tuning(path):
    cfg = load_config(path)
    for stream in ("spatial", "temporal"):  # what each stream trains and fine-tunes with
        assert cfg.stream_train(stream).sparsity > 0 and cfg.stream_prune(stream).sparsity > 0, stream
    raw = yaml.safe_load(path.read_text())
    for section, key in (("prune", "residual"), ("prune", "round_to")):
        assert key in raw[section], f"{path.name}: {section}.{key} is left to its default"


def test_paper_config_prunes_internal_channels_of_resnet101_on_split_3():
    cfg = load_config(PAPER)
    assert cfg.prune.residual is False and cfg.prune.round_to == 8
    assert cfg.model.arch == "resnet101" and cfg.data.split == 3


def test_paper_figure_videos_are_split_3_test_videos(shared_data):
    cfg = load_config(PAPER)
    assert cfg.explain.figure_videos
    test_list = (shared_data / "ucfTrainTestlist" / "testlist03.txt").read_text().split()
    tested = {Path(line).stem for line in test_list}
    assert set(cfg.explain.figure_videos) <= tested


def test_paths_are_resolved_against_the_config_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # any working directory
    cfg = load_config(PAPER)
    assert cfg.data.videos == str(REPO / "data" / "UCF-101")
    assert cfg.data.splits == str(REPO / "data" / "ucfTrainTestlist")
    assert cfg.paths.root == REPO / "runs" / "ucf101_split3"
    # the same through the sweep's loader; a --set path is the shell's, relative to the working directory
    cfg = load_config(PAPER, ["data.videos=mine/UCF-101"])
    assert cfg.data.splits == str(REPO / "data" / "ucfTrainTestlist") and cfg.data.videos == "mine/UCF-101"


def test_a_relative_weights_file_is_found_from_another_working_directory(tmp_path, monkeypatch):
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    (config_dir / "w.pt").write_bytes(b"")
    (config_dir / "x.yaml").write_text("experiment: {name: x}\nmodel: {weights: w.pt}\n"
                                       "ray: {storage_path: 's3://bucket/x'}\nstages: [train]\n")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(config_dir / "x.yaml")
    assert cfg.model.weights == str(config_dir / "w.pt") and cfg.ray.storage_path == "s3://bucket/x"
    assert not [p for p in config_problems(cfg) if "weights" in p]
    assert cfg.paths.root == tmp_path / "runs" / "x"  # not written in the file: the default, under the cwd


def test_resolve_paths_keeps_absolute_paths_keywords_uris_and_bad_types():
    raw = {"experiment": {"root": "/abs/root"}, "data": {"videos": "~/v", "splits": 3},
           "model": {"weights": "imagenet"}, "ray": {"storage_path": "gs://b/p"}, "train": {"lr": 0.1}}
    resolved = resolve_paths(raw, "/base")
    assert resolved["experiment"]["root"] == "/abs/root" and resolved["model"]["weights"] == "imagenet"
    assert resolved["data"]["videos"] == str(Path("~/v").expanduser())
    assert resolved["data"]["splits"] == 3  # left for the type check, which names it
    assert resolved["ray"]["storage_path"] == "gs://b/p" and resolved["train"] == {"lr": 0.1}
    assert raw["data"]["videos"] == "~/v"  # the input is not changed
    assert resolve_paths({"data": {"videos": "v"}}, "/base")["data"]["videos"] == "/base/v"
    assert resolve_paths([1], "/base") == [1]
