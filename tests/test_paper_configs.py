"""ucf101_split3_all_steps.yaml is the paper config explaining every step, and nothing else."""
from pathlib import Path

import yaml

from analysis.explain import explain_steps
from training.config import ExperimentConfig
from training.validation import config_problems

CONFIGS = Path(__file__).resolve().parents[1] / "ray_configs"


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_all_steps_config_differs_only_in_explain_steps_and_name():
    paper = flatten(yaml.safe_load((CONFIGS / "ucf101_split3.yaml").read_text()))
    every = flatten(yaml.safe_load((CONFIGS / "ucf101_split3_all_steps.yaml").read_text()))
    changed = {k for k in paper.keys() | every.keys() if paper.get(k) != every.get(k)}
    assert changed == {"experiment.name", "experiment.root", "explain.steps"}
    assert every["explain.steps"] == "all" and every["experiment.name"] == "ucf101_split3_all_steps"
    assert every["experiment.root"] == f"../runs/{every['experiment.name']}"  # the root follows the name

    cfg = ExperimentConfig.from_yaml(CONFIGS / "ucf101_split3_all_steps.yaml")
    assert explain_steps(cfg) == list(range(18))  # all 18 models, 0 to 50.04 % removed
    paper_cfg = ExperimentConfig.from_yaml(CONFIGS / "ucf101_split3.yaml")
    assert explain_steps(paper_cfg) == [0, 6, 7, 14]
    # validation accepts "all" (only folders that exist on a data machine may be missing here)
    assert [p for p in config_problems(cfg) if not p.startswith("data.")] == []
