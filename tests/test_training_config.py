"""The typed experiment config: full YAML, unknown keys and wrong types named, paths."""
from __future__ import annotations

from pathlib import Path

import pytest

from core.config import DEFAULT_STAGES, ConfigError, ExperimentConfig
from core.overrides import load_config
from tests.layout import REPO


FULL = """
experiment: {name: t1, root: ROOT, seed: 3}
data: {split: 2, synthetic: {classes: 4}, classes: [A, B], test_clips: 5}
model: {arch: resnet50, weights: none, input_size: 64, dropout: 0.2}
train: {runs: 2, epochs: 3, lr: 1, optimizer: adamw, scheduler: step, grad_clip: 5}
loader: {threads: 1, device: cpu}
eval: {batch_size: 16}
fusion: {methods: [mean]}
prune: {steps: 3, residual: true}
explain: {steps: [0, 6, 7, 14], figure_videos: [v_A_g01_c01]}
ray: {num_cpus: 2, gpus_per_trial: 0.5}
stages: [data, train]
"""


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text.replace("ROOT", str(tmp_path / "exp")))
    return path


def test_full_config_is_typed(tmp_path):
    cfg = load_config(write(tmp_path, FULL))
    assert cfg.experiment.seed == 3 and cfg.data.split == 2 and cfg.data.classes == ["A", "B"]
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)  # int widened to float
    assert cfg.train.optimizer == "adamw" and cfg.prune.residual is True and cfg.prune.step_fraction == 0.04
    assert cfg.explain.steps == [0, 6, 7, 14] and cfg.ray.gpus_per_trial == 0.5
    assert cfg.stages == ["data", "train"]
    paths = cfg.paths
    assert paths.root == tmp_path / "exp"
    assert paths.shards == tmp_path / "exp" / "shards" / "split2"
    assert paths.checkpoint("temporal", 2, 5) == tmp_path / "exp" / "checkpoints" / "temporal" / "run2" / "step5.pt"
    assert (paths.results, paths.saliency, paths.report) == tuple(tmp_path / "exp" / n for n in ("results", "saliency", "report"))
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg


def test_defaults():
    cfg = ExperimentConfig.from_dict({"experiment": {"name": "x"}})
    assert cfg.stages == DEFAULT_STAGES and cfg.explain.steps == "all" and cfg.data.test_clips == 25
    assert cfg.paths.root == Path("runs/x").resolve()


@pytest.mark.parametrize("text, message", [
    ("train: {epochs: 1, lrate: 0.1}", r"c\.yaml: train: unknown keys \['lrate'\]"),
    ("bogus: {}", r"config: unknown keys \['bogus'\]"),
    ("prune: {steps: 1, nope: 1, nada: 2}", r"prune: unknown keys \['nada', 'nope'\]"),
    ("train: {epochs: 1.5}", r"train\.epochs: expected int, got 1\.5"),
    ("model: {arch: vgg16}", r"model\.arch: 'vgg16' is not one of \['resnet18'"),
    ("explain: {steps: some}", r"explain\.steps: expected 'all' or a list of int"),
    ("train: [1, 2]", r"train: expected a mapping"),
    ("train: {amp: 1}", r"train\.amp: expected bool"),
])
def test_bad_configs_name_the_problem(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_unreadable_yaml_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"c\.yaml: cannot read"):
        load_config(write(tmp_path, "train: {epochs: [1"))


@pytest.mark.parametrize("name", ["demo.yaml", "ucf101_split3.yaml"])
def test_shipped_configs_parse(name):
    cfg = load_config(REPO / "ray_configs" / name)
    assert cfg.train.runs >= 2
