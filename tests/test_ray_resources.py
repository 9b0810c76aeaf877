"""Where each piece runs and where Tune keeps its state, on a real local Ray: trial resources
come from the config (fractional GPUs share one GPU; `ray.cpus_per_trial` sizes the DALI
threads), ingest tasks ask for CPUs only, and `ray.storage_path` may be a pyarrow filesystem
URI (tested with `file://`), from which `--resume` restores the experiment."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import ray
from ray import tune

from ingest.shard_pool import INGEST_TASK
from tests.sweeps import local_ray
from core.config import ExperimentConfig
from training.data import loader_config
from core.resources import trial_resources
from pipeline.tune import make_tuner
from pipeline.tune_state import storage_uri


def config(root: Path, **ray_section) -> ExperimentConfig:
    return ExperimentConfig.from_dict({"experiment": {"name": "res", "root": str(root)},
                                       "data": {"synthetic": {"classes": 3}},
                                       "train": {"runs": 1}, "ray": {"cpus_per_trial": 1, **ray_section}})


def test_cpus_per_trial_sizes_the_dali_threads_unless_set(tmp_path):
    cfg = config(tmp_path, cpus_per_trial=3)
    assert loader_config(cfg, "spatial", train=True).threads == 3
    assert loader_config(cfg, "temporal", train=False).threads == 3
    cfg.loader.threads = 1
    assert loader_config(cfg, "spatial", train=True).threads == 1
    assert loader_config(config(tmp_path, cpus_per_trial=0.5), "spatial", train=True).threads == 1


def test_ingest_tasks_ask_for_cpus_only_and_spread():
    assert INGEST_TASK == {"num_cpus": 1, "num_gpus": 0, "scheduling_strategy": "SPREAD"}


def test_storage_uri_keeps_uris_and_makes_folders_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert storage_uri(config(tmp_path, storage_path="s3://bucket/exp/")) == "s3://bucket/exp"
    assert storage_uri(config(tmp_path, storage_path="rel/ray")) == str(tmp_path / "rel" / "ray")
    assert storage_uri(config(tmp_path / "root")) == str(tmp_path / "root" / "ray")


def probe(params: dict, experiment: dict, resume: bool = False) -> None:
    """A trial that records when it ran and which GPU Ray gave it, then reports."""
    cfg = ExperimentConfig.from_dict(experiment)
    out = Path(cfg.experiment.root) / "probes"
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    time.sleep(2)
    record = {"start": start, "end": time.time(), "gpus": ray.get_gpu_ids(),
              "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES")}
    (out / f"{params['stream']}-{params['run']}-{resume}.json").write_text(json.dumps(record))
    tune.report({"done": True, "resume": resume})


@pytest.fixture(scope="module")
def one_gpu_ray():
    """A local Ray with 2 CPUs and one logical GPU, stopped after this module; its workers
    import this module (by the name pytest gave it) to run ``probe``."""
    with local_ray(num_gpus=1):
        yield


@pytest.mark.slow
def test_half_a_gpu_per_trial_runs_two_trials_on_one_gpu_at_once(tmp_path, one_gpu_ray):
    cfg = config(tmp_path / "exp", gpus_per_trial=0.5)
    assert trial_resources(cfg) == {"cpu": 1, "gpu": 0.5}
    results = make_tuner(cfg, trainable=probe).fit()
    assert [r.error for r in results] == [None, None]
    probes = [json.loads(p.read_text()) for p in (tmp_path / "exp" / "probes").glob("*.json")]
    assert len(probes) == 2
    assert all(p["gpus"] == [0] or p["gpus"] == ["0"] for p in probes), probes  # the one GPU, shared
    first, second = sorted(probes, key=lambda p: p["start"])
    assert second["start"] < first["end"], f"the trials ran one after the other: {probes}"


@pytest.mark.slow
def test_storage_path_as_a_filesystem_uri_holds_tunes_state_and_resumes(tmp_path, one_gpu_ray):
    store = tmp_path / "object_store"
    cfg = config(tmp_path / "exp", gpus_per_trial=0, storage_path=f"file://{store}")
    assert storage_uri(cfg) == f"file://{store}"
    results = make_tuner(cfg, trainable=probe).fit()
    assert [r.error for r in results] == [None, None]
    # Tune's experiment state and trial folders are under the URI's path, not the root's ray/
    assert (store / "train").is_dir() and list((store / "train").glob("experiment_state-*.json"))
    assert len([p for p in (store / "train").iterdir() if p.is_dir() and p.name.startswith("probe")]) == 2
    assert not cfg.paths.ray.exists()
    assert tune.Tuner.can_restore(f"file://{store}/train")
    # --resume restores from the URI: both trials are finished, none runs again
    before = sorted(p.name for p in (tmp_path / "exp" / "probes").glob("*.json"))
    restored = make_tuner(cfg, trainable=probe, resume=True).fit()
    assert [r.error for r in restored] == [None, None]
    assert sorted(p.name for p in (tmp_path / "exp" / "probes").glob("*.json")) == before
