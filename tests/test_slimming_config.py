"""The shipped configs state Network Slimming's settings (sparsity in the baseline and while
fine-tuning, which BatchNorms, width rounding) with their sources, and mean the same files from
any working directory (relative paths resolved against the config file)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from training.config import ExperimentConfig, resolve_paths
from training.overrides import load_config
from training.validation import config_problems

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "ray_configs" / "ucf101_split3.yaml"
DEMO = REPO / "ray_configs" / "demo.yaml"


def comment_above(text: str, section: str, key: str) -> str:
    """The comment lines right above ``key:`` in ``section`` plus the key line's own comment."""
    lines = text.splitlines()
    start = lines.index(f"{section}:")
    for index in range(start + 1, len(lines)):
        if re.match(rf"\s+{key}:", lines[index]):
            above = []
            for line in reversed(lines[start + 1:index]):
                if not line.strip().startswith("#"):
                    break
                above.insert(0, line)
            own = lines[index].partition("#")[2]
            return "\n".join(above + [own])
        if not lines[index].startswith(" "):
            break
    raise AssertionError(f"{section}.{key} is not written in the config")


@pytest.mark.parametrize("path", [PAPER, DEMO])
def test_both_configs_train_the_baseline_with_sparsity_and_keep_it_while_fine_tuning(path):
    cfg = ExperimentConfig.from_yaml(path)
    assert cfg.train.sparsity > 0 and cfg.prune.sparsity > 0
    raw = yaml.safe_load(path.read_text())
    for section, key in (("train", "sparsity"), ("prune", "sparsity"), ("prune", "residual"),
                         ("prune", "round_to")):
        assert key in raw[section], f"{path.name}: {section}.{key} is left to its default"
    text = path.read_text()
    why_sparsity = comment_above(text, "train", "sparsity")
    assert "Liu et al" in why_sparsity and "1e-5" in why_sparsity, why_sparsity
    assert comment_above(text, "prune", "residual").strip(), "prune.residual needs a comment saying why"
    assert comment_above(text, "prune", "round_to").strip()


def test_paper_config_cites_the_study_and_network_slimming_and_uses_the_resnet_lambda():
    cfg = ExperimentConfig.from_yaml(PAPER)
    text = PAPER.read_text()
    header = text[:text.index("experiment:")]
    for words in ("bachelor thesis", "ResNet-101", "UCF101 split 3", "Network Slimming", "ICCV 2017", "Liu"):
        assert words in header, words
    assert cfg.train.sparsity == cfg.prune.sparsity == 1e-5  # Liu et al.'s value for ResNets
    assert "1e-4 for VGG" in comment_above(text, "train", "sparsity")
    assert cfg.prune.residual is False and cfg.prune.round_to == 8
    assert cfg.model.arch == "resnet101" and cfg.data.split == 3


def test_demo_config_quotes_its_lambda_search():
    why = comment_above(DEMO.read_text(), "train", "sparsity")
    assert "benchmarks.sparsity_search" in why and "AdamW" in why, why


def test_paper_figure_videos_are_split_3_test_videos(shared_data):
    cfg = ExperimentConfig.from_yaml(PAPER)
    assert cfg.explain.figure_videos
    test_list = (shared_data / "ucfTrainTestlist" / "testlist03.txt").read_text().split()
    tested = {Path(line).stem for line in test_list}
    assert set(cfg.explain.figure_videos) <= tested


def test_paths_are_resolved_against_the_config_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # any working directory
    cfg = ExperimentConfig.from_yaml(PAPER)
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
    cfg = ExperimentConfig.from_yaml(config_dir / "x.yaml")
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
