"""Issue #15 point 7: every config value range-checked before Ray starts; one message per
problem naming key, value and what is allowed; exit 2 without a traceback."""
from __future__ import annotations

import subprocess
import sys

import pytest

from core.config import ConfigError, ExperimentConfig
from core.overrides import load_config
from pipeline.validation import config_problems, validate
from tests.layout import REPO

GOOD = {"experiment": {"name": "ok"}, "data": {"synthetic": {"classes": 3}}}


def problems(**sections) -> list[str]:
    """The problems of GOOD with ``sections`` over it: the schema's (types, ranges: the config is
    not built) or else the rules between keys (pipeline.validation)."""
    data = {k: dict(v) for k, v in GOOD.items()}
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    try:
        cfg = ExperimentConfig.from_dict(data)
    except ConfigError as exc:
        return str(exc).splitlines()
    return config_problems(cfg)


def test_good_config_and_demo_have_no_problems():
    assert problems() == []
    assert config_problems(load_config(REPO / "ray_configs" / "demo.yaml")) == []


@pytest.mark.parametrize("section, values, message", [
    ("data", {"flow_bound": 0}, "data.flow_bound: 0 is not allowed (must be > 0)"),
    ("data", {"workers": 0}, "data.workers: 0 is not allowed (must be > 0)"),
    ("ray", {"max_failures": -1}, "ray.max_failures: -1 is not allowed (must be >= 0)"),
    ("data", {"split": 7}, "data.split: 7 is not allowed (must be in [1, 3])"),
    ("prune", {"step_fraction": 1.5}, "prune.step_fraction: 1.5 is not allowed (must be in (0, 1))"),
    ("train", {"runs": 0}, "train.runs: 0 is not allowed (must be > 0)"),
    ("train", {"lr": -1}, "train.lr: -1 is not allowed (must be > 0)"),
    ("explain", {"steps": [0, 18]}, "explain.steps: [18] outside 0..prune.steps (17)"),
    ("explain", {"forward_batch": 0}, "explain.forward_batch: 0 is not allowed (must be > 0)"),
    ("model", {"weights": "/nonexistent/w.pt"}, "model.weights: '/nonexistent/w.pt' is not 'none', 'imagenet', a version name"),
    ("experiment", {"name": "../../x"}, "experiment.name: '../../x' is not a plain name"),
    ("experiment", {"name": "/abs"}, "experiment.name: '/abs' is not a plain name"),
    ("experiment", {"name": ""}, "experiment.name: '' is not a plain name"),
    ("fusion", {"svm_c": [0.1, -1.0]}, "fusion.svm_c: [0.1, -1.0] is not allowed (a value > 0 or a non-empty list"),
    ("fusion", {"svm_c": 0.0}, "fusion.svm_c: 0.0 is not allowed"),
    ("train", {"val_fraction": 0.0}, "fusion.fit_on: 'heldout' (for ['svm_softmax', 'svm_features', 'svm_logits']) needs held-out videos"),
    ("ray", {"gpus_per_trial": -0.5}, "ray.gpus_per_trial: -0.5 is not allowed (must be 0 = CPU only, a fraction in (0, 1]"),
    ("ray", {"gpus_per_trial": 1.5}, "ray.gpus_per_trial: 1.5 is not allowed"),
    ("ray", {"cpus_per_trial": 0}, "ray.cpus_per_trial: 0 is not allowed (must be > 0)"),
    ("data", {"synthetic": None, "videos": "/nonexistent/v"}, "data.videos: '/nonexistent/v' is not a readable folder"),
])
def test_each_bad_value_is_named(section, values, message):
    found = problems(**{section: values})
    assert len(found) >= 1 and any(p.startswith(message) for p in found), found


@pytest.mark.parametrize("value", ["auto", 1, 256])
def test_irof_forward_batch_auto_by_default_or_a_positive_int(value):
    assert ExperimentConfig().explain.forward_batch == "auto"
    assert problems(explain={"forward_batch": value}) == []


@pytest.mark.parametrize("value", ["big", 2.5, True])
def test_irof_forward_batch_of_another_type_is_named(value):
    with pytest.raises(ConfigError, match=r"explain.forward_batch: expected int or 'auto', got"):
        ExperimentConfig.from_dict({"explain": {"forward_batch": value}})


@pytest.mark.parametrize("gpus", [None, 0, 0.25, 0.5, 1, 2, 8])
def test_fractional_and_whole_gpus_per_trial_are_allowed(gpus):
    assert problems(ray={"gpus_per_trial": gpus}) == []


def test_videos_and_splits_are_needed_only_by_the_data_stage():
    without = {**GOOD, "data": {"synthetic": None, "videos": None, "splits": None}}
    cfg = ExperimentConfig.from_dict({**without, "stages": ["data", "train"]})
    assert config_problems(cfg) == ["data.videos: null is only allowed with data.synthetic",
                                    "data.splits: null is only allowed with data.synthetic"]
    assert config_problems(cfg, ["train", "fuse"]) == []  # later stages read the shards already built
    assert config_problems(ExperimentConfig.from_dict({**without, "stages": ["train"]})) == []


def test_every_problem_is_reported_once():
    found = problems(data={"workers": 0, "flow_bound": -2}, train={"runs": 0})
    assert len(found) == 3
    with pytest.raises(ConfigError) as err:  # the schema's range checks: the config is not built
        ExperimentConfig.from_dict({**GOOD, "train": {"runs": 0, "epochs": 0}})
    assert str(err.value).splitlines() == ["train.runs: 0 is not allowed (must be > 0)",
                                           "train.epochs: 0 is not allowed (must be > 0)"]
    with pytest.raises(ConfigError) as err:  # the rules between keys: validate lists each
        validate(ExperimentConfig.from_dict({**GOOD, "data": {"synthetic": {}, "classes": ["A"]},
                                             "explain": {"steps": [0, 99]}}))
    assert str(err.value).splitlines() == ["data.classes: ['A'] must name at least 2 classes (or be null for all)",
                                           "explain.steps: [99] outside 0..prune.steps (17)"]


def test_yaml_string_float_suggests_decimal_point(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {lr: 1e-3}\n")  # YAML 1.1 reads this as the string '1e-3'
    with pytest.raises(ConfigError, match=r"train\.lr: '1e-3' was read by YAML as a string.*1\.0e-3"):
        load_config(path)


def test_sweep_exits_2_without_traceback_before_ray(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(f"experiment: {{name: bad, root: {tmp_path / 'exp'}}}\n"
                    "data: {synthetic: {classes: 3}, workers: 0, split: 7}\nray: {max_failures: -1}\n")
    done = subprocess.run([sys.executable, "-m", "pipeline.sweep", "--config", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    for key in ("data.workers: 0", "data.split: 7", "ray.max_failures: -1"):
        assert key in done.stderr
    assert not (tmp_path / "exp").exists()  # nothing written, Ray never started


def test_ingest_with_missing_or_unreadable_path_exits_2_with_one_line(tmp_path):
    splits = tmp_path / "splits"
    splits.mkdir()
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o000)
    cases = [(tmp_path / "missing", splits, "--videos"), (splits, tmp_path / "nope.txt", "--splits")]
    import os
    if os.geteuid() != 0:  # root reads anything
        cases.append((locked, splits, "--videos"))
    try:
        for videos, split_dir, option in cases:
            done = subprocess.run([sys.executable, "-m", "ingest.build_shards", "--videos", str(videos),
                                   "--splits", str(split_dir), "--split", "1", "--out", str(tmp_path / "out")],
                                  cwd=REPO, capture_output=True, text=True, timeout=120)
            lines = done.stderr.strip().splitlines()
            assert done.returncode == 2 and len(lines) == 1, done.stderr
            assert lines[0].startswith(f"error: {option} ") and "Traceback" not in done.stderr
            assert not (tmp_path / "out").exists()
    finally:
        locked.chmod(0o700)
