"""``--resume`` restores only Tune state that this experiment root wrote (#15.9): Tune pickles
its state, and unpickling another root's (or anyone's) ``tuner.pkl`` would run their code."""
from __future__ import annotations

import pickle
from pathlib import Path

import yaml

from core.config import ExperimentConfig
from pipeline.sweep import main
from pipeline.tune_state import check_resume_root, claim_tune_state


class Trap:
    """Unpickling this creates a file: proof that a refused state was never loaded."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def experiment(root: Path, **ray) -> ExperimentConfig:
    return ExperimentConfig.from_dict({"experiment": {"name": "x", "root": str(root)},
                                       "ray": {"num_cpus": 1, **ray}, "stages": ["train"]})


def plant_tune_state(folder: Path, trap: Path) -> None:
    """What ``Tuner.can_restore`` looks for: a ``tuner.pkl``, here a booby-trapped one."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tuner.pkl").write_bytes(pickle.dumps(Trap(trap)))


def resume(cfg: ExperimentConfig, tmp_path: Path, capsys) -> tuple[int, str]:
    config = tmp_path / f"{cfg.paths.root.name}.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    code = main(["--config", str(config), "--resume"])
    return code, capsys.readouterr().err


def test_resume_refuses_tune_state_of_another_root_naming_both(tmp_path, capsys):
    trap = tmp_path / "unpickled"
    first = experiment(tmp_path / "first")
    plant_tune_state(first.paths.ray / "train", trap)
    claim_tune_state(first, "train")
    assert check_resume_root(first, "train")  # its own state: restored
    # a second root pointed at the first one's Tune storage
    second = experiment(tmp_path / "second", storage_path=str(first.paths.ray))
    code, err = resume(second, tmp_path, capsys)
    assert code == 2, err
    assert f"written by the experiment root {first.paths.root.resolve()}" in err
    assert f"not by this root {second.paths.root.resolve()}" in err and "pickles" in err
    assert not trap.exists() and not (second.paths.root / "config.json").exists()  # refused before writing


def test_resume_refuses_tune_state_no_sweep_claimed(tmp_path, capsys):
    trap = tmp_path / "unpickled"
    cfg = experiment(tmp_path / "exp")
    plant_tune_state(cfg.paths.ray / "train", trap)  # e.g. copied in from elsewhere
    code, err = resume(cfg, tmp_path, capsys)
    assert code == 2 and "an unknown run (no crossroads_root.json)" in err, err
    assert not trap.exists()


def test_resume_without_tune_state_starts_new(tmp_path):
    assert check_resume_root(experiment(tmp_path / "exp"), "train") is False
