"""ucf101_split3_all_steps.yaml is the paper config explaining every step, and nothing else
(it extends ucf101_split3.yaml; tests/test_config_hashes.py pins its hash to the old full copy's)."""
from pathlib import Path

from explanations.stage import explain_steps
from core.config import dotted_keys
from core.overrides import load_config
from pipeline.validation import config_problems

CONFIGS = Path(__file__).resolve().parents[1] / "ray_configs"


def test_all_steps_config_differs_only_in_explain_steps_and_name():
    paper = dotted_keys(load_config(CONFIGS / "ucf101_split3.yaml").to_dict())
    every = dotted_keys(load_config(CONFIGS / "ucf101_split3_all_steps.yaml").to_dict())
    changed = {k for k in paper.keys() | every.keys() if paper.get(k) != every.get(k)}
    assert changed == {"experiment.name", "experiment.root", "explain.steps"}
    assert every["explain.steps"] == "all" and every["experiment.name"] == "ucf101_split3_all_steps"
    # the root follows the name, next to the paper config's
    assert every["experiment.root"] == str(CONFIGS.parent.resolve() / "runs" / every["experiment.name"])
    assert paper["experiment.root"] == str(CONFIGS.parent.resolve() / "runs" / "ucf101_split3")

    cfg = load_config(CONFIGS / "ucf101_split3_all_steps.yaml")
    assert explain_steps(cfg) == list(range(18))  # all 18 models, 0 to 50.04 % removed
    paper_cfg = load_config(CONFIGS / "ucf101_split3.yaml")
    assert explain_steps(paper_cfg) == [0, 6, 7, 14]
    # validation accepts "all" (only folders that exist on a data machine may be missing here)
    assert [p for p in config_problems(cfg) if not p.startswith("data.")] == []
