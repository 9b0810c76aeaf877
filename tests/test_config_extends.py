"""A config may extend another (issue #28): the parent's path is relative to the extending file,
the child's keys override recursively, each file's relative paths stay relative to that file,
cycles are refused, and the hash is the resolved config's (equal to a full copy's)."""
from __future__ import annotations

import pytest

from core.config import ConfigError, config_hash
from core.overrides import load_config


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_child_overrides_recursively_and_hashes_as_the_full_copy(tmp_path):
    write(tmp_path / "base" / "paper.yaml",
          "experiment: {name: paper, root: ../runs/paper}\n"
          "train: {epochs: 5, lr: 0.1, temporal: {lr: 0.5, epochs: 9}}\nprune: {steps: 4}\n")
    child = write(tmp_path / "child" / "more.yaml",
                  "extends: ../base/paper.yaml\nexperiment: {name: more}\n"
                  "train: {lr: 0.2, temporal: {lr: 0.7}}\n")
    copy = write(tmp_path / "base" / "copy.yaml",
                 "experiment: {name: more, root: ../runs/paper}\n"
                 "train: {epochs: 5, lr: 0.2, temporal: {lr: 0.7, epochs: 9}}\nprune: {steps: 4}\n")
    cfg = load_config(child)
    assert (cfg.experiment.name, cfg.train.epochs, cfg.train.lr, cfg.prune.steps) == ("more", 5, 0.2, 4)
    assert cfg.train.temporal == {"lr": 0.7, "epochs": 9}  # merged key by key, not replaced
    assert cfg.paths.root == (tmp_path / "runs" / "paper").resolve()  # relative to paper.yaml's folder
    assert cfg == load_config(copy) and config_hash(cfg) == config_hash(load_config(copy))
    assert config_hash(cfg) != config_hash(load_config(tmp_path / "base" / "paper.yaml"))


def test_chains_of_extends_and_set_overrides_apply_in_order(tmp_path):
    write(tmp_path / "a.yaml", "train: {epochs: 1, lr: 0.1}\n")
    write(tmp_path / "b.yaml", "extends: a.yaml\ntrain: {epochs: 2}\n")
    c = write(tmp_path / "c.yaml", "extends: b.yaml\ntrain: {epochs: 3}\n")
    cfg = load_config(c, ["train.lr=0.3"])
    assert (cfg.train.epochs, cfg.train.lr) == (3, 0.3)


@pytest.mark.parametrize("files, start, message", [
    ({"a.yaml": "extends: a.yaml\n"}, "a.yaml", r"a\.yaml: extends forms a cycle \(a\.yaml -> a\.yaml\)"),
    ({"a.yaml": "extends: b.yaml\n", "b.yaml": "extends: a.yaml\n"}, "a.yaml",
     r"extends forms a cycle \(a\.yaml -> b\.yaml -> a\.yaml\)"),
    ({"a.yaml": "extends: missing.yaml\n"}, "a.yaml", r"missing\.yaml: cannot read the config"),
    ({"a.yaml": "extends: [b.yaml]\n"}, "a.yaml", r"a\.yaml: extends: expected the path of another config"),
    ({"a.yaml": "extends: b.yaml\n", "b.yaml": "train: {lrate: 1}\n"}, "a.yaml",
     r"a\.yaml: train: unknown keys \['lrate'\] \(did you mean 'train\.lr'"),
])
def test_bad_extends_are_refused_naming_the_files(tmp_path, files, start, message):
    for name, text in files.items():
        write(tmp_path / name, text)
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / start)
