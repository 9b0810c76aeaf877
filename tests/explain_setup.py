"""An experiment for explanation tests: the shared synthetic shards linked into a fresh root,
random step-0 and pruned step-1 checkpoints of both streams, and clips read back through the
DALI eval pipeline independently of the explain stage."""
from __future__ import annotations

import dataclasses
import itertools
import shutil

import polars as pl
import torch

from pruning import prune_model
from shards.dali import make_loader
from training.checkpoint import save_checkpoint
from core.config import ExperimentConfig
from training.data import class_names, loader_config, read_manifest
from training.models import build_stream


SIZE = 32


def make_config(root, figure_video, steps=(0, 1)):
    return ExperimentConfig.from_dict({
        "experiment": {"name": "explain-test", "root": str(root)},
        "model": {"input_size": SIZE},
        "train": {"runs": 1},
        "prune": {"steps": 1},
        "loader": {"threads": 1, "device": "cpu"},
        "explain": {"steps": list(steps), "max_videos": 2, "clips_per_video": 1,
                    "figure_videos": [figure_video], "batch_size": 4, "forward_batch": 64},
        "ray": {"num_cpus": 2, "cpus_per_trial": 1, "gpus_per_trial": 0},
    })


def build_explain_experiment(synthetic_shards, root) -> ExperimentConfig:
    """Shards linked into a fresh experiment root, and random step-0 and pruned step-1
    checkpoints of both streams."""
    (root / "shards").mkdir()
    (root / "shards" / "split1").symlink_to(synthetic_shards, target_is_directory=True)
    manifest = read_manifest(synthetic_shards)
    classes = class_names(manifest)
    figure_video = manifest.filter(pl.col("subset") == "test").sort("video")["video"][-1]
    cfg = make_config(root, figure_video)
    for seed, stream in enumerate(("spatial", "temporal")):
        torch.manual_seed(seed)
        model = build_stream(stream, "resnet18", len(classes))
        with torch.no_grad():
            model.fc.weight.mul_(20)  # confident outputs: IROF curves far from flat
        save_checkpoint(cfg.paths.checkpoint(stream, 1, 0), model, epoch=0, config=cfg, classes=classes)
        save_checkpoint(cfg.paths.checkpoint(stream, 1, 1), prune_model(model, 0.04), epoch=1, config=cfg,
                        classes=classes, extra={"step": 1, "prune_ratio": 0.04})
    return cfg


def clip_batch(cfg, stream, video, clip):
    """The clip through the DALI eval pipeline, read independently of the stage."""
    lcfg = dataclasses.replace(loader_config(cfg, stream, train=False), batch_size=8)
    for batch in make_loader(cfg.paths.shards / "test", lcfg):
        for i, key in enumerate(zip(batch["video"], batch["clip"].tolist())):
            if key == (video, clip):
                return batch["x"][i:i + 1], batch["label"][i:i + 1]
    raise AssertionError(f"{video} clip {clip} not found")


def fresh_root(experiment: ExperimentConfig, tmp_path, **explain) -> ExperimentConfig:
    """A new experiment root on the same shards and copies of the fixture's checkpoints."""
    cfg = make_config(tmp_path, experiment.explain.figure_videos[0])
    cfg = dataclasses.replace(cfg, explain=dataclasses.replace(cfg.explain, **explain))
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "split1").symlink_to(experiment.paths.shards, target_is_directory=True)
    for stream, step in itertools.product(("spatial", "temporal"), (0, 1)):
        cfg.paths.checkpoint(stream, 1, step).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(experiment.paths.checkpoint(stream, 1, step), cfg.paths.checkpoint(stream, 1, step))
    return cfg
