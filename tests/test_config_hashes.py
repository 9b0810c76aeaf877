"""Config hashes survive schema changes (issue #28): an experiment root remembers its config's
hash (config.json) and refuses a rerun whose hash differs, so the same config must keep hashing
as it did. Pinned: the shipped configs as they were when the pydantic schema came
(tests/data/ray_configs/, frozen copies: editing a shipped config changes its hash legitimately)
with the hashes the old hand-written schema gave them, and a demo root's recorded config.

A field added later (with its default) enters every config's dict; these tests compare the keys
that existed when pinned, so they catch a changed value, type or default of an existing key."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from core.config import ExperimentConfig, config_hash
from core.overrides import load_config

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"

# the hashes the hand-written schema gave the shipped configs (computed before #28's change),
# with the checkout's folder written as /repo (relative paths are made absolute against the
# config file's folder, so a real root's hash depends on where the checkout lies)
PINNED = {
    "demo.yaml": "e3e27086cfe13ba3",
    "paper_shape.yaml": "9489d247029e8e55",
    "ucf101_split3.yaml": "cf7e9bcb8f47e2b8",
    "ucf101_split3_all_steps.yaml": "60dc4000d641c085",  # the full copy it was, not extends: yet
}
WHY = ("the schema now hashes this config differently: finished experiment roots of it would be "
       "refused (pipeline.sweep.check_config); keep to_dict() as it was, or migrate the roots")


def hash_of(d: dict) -> str:
    """``config_hash``'s formula over a plain mapping."""
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def restricted(now: dict, then: dict, path: str = "") -> dict:
    """``now`` with only the keys ``then`` has, in the schema's sections (a mapping a config
    writes freely, ``data.synthetic`` or ``train.spatial``, is kept whole)."""
    def inner(key):
        where = f"{path}{key}"
        if isinstance(then[key], dict) and isinstance(now.get(key), dict) and where not in FREE_FORM:
            return restricted(now[key], then[key], where + ".")
        return now.get(key)
    return {key: inner(key) for key in then}


FREE_FORM = {"data.synthetic", "train.spatial", "train.temporal", "prune.spatial", "prune.temporal"}
# the schema's keys when pinned: those of the demo root's recorded config (written by that schema)
KEYS_AT_PIN = json.loads((DATA / "demo_experiment_config.json").read_text())["config"]


def pinned_config(name: str) -> dict:
    """The frozen copy's resolved config as the sweep loads it, its folder written as /repo/ray_configs."""
    cfg = load_config(DATA / "ray_configs" / name)
    assert config_hash(cfg) == hash_of(cfg.to_dict())  # the formula itself unchanged
    return json.loads(json.dumps(cfg.to_dict()).replace(str(DATA), "/repo"))


@pytest.mark.parametrize("name", sorted(PINNED))
def test_shipped_config_hash_is_unchanged(name):
    assert hash_of(restricted(pinned_config(name), KEYS_AT_PIN)) == PINNED[name], WHY


def test_the_demo_roots_recorded_hash_still_matches_its_config():
    """runs/demo/experiment.json of a demo run (the config with its absolute paths, as recorded)."""
    record = json.loads((DATA / "demo_experiment_config.json").read_text())
    now = ExperimentConfig.from_dict(record["config"]).to_dict()
    assert hash_of(restricted(now, record["config"])) == record["config_hash"] == "146edd44228f40f8", WHY


def test_all_steps_extends_the_paper_config_and_equals_the_copy_it_replaced():
    """ucf101_split3_all_steps.yaml was a 141-line copy; it now extends ucf101_split3.yaml. While
    the paper config is as pinned, the resolved child equals the old copy, hash included."""
    live = REPO / "ray_configs"
    def relocate(cfg):
        return json.loads(json.dumps(cfg.to_dict()).replace(str(REPO), "/repo"))
    if relocate(load_config(live / "ucf101_split3.yaml")) != pinned_config("ucf101_split3.yaml"):
        pytest.skip("ucf101_split3.yaml was edited since the pin (tests/test_paper_configs.py checks the child)")
    child = relocate(load_config(live / "ucf101_split3_all_steps.yaml"))
    assert child == pinned_config("ucf101_split3_all_steps.yaml")
    assert hash_of(restricted(child, KEYS_AT_PIN)) == PINNED["ucf101_split3_all_steps.yaml"]
