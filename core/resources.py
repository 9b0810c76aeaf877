"""What one trial or stage task asks of Ray: its CPUs and, where the cluster has them, a GPU."""
from __future__ import annotations

import ray

from core.config import ExperimentConfig

def trial_resources(cfg: ExperimentConfig) -> dict:
    """1 GPU per trial where the cluster has GPUs (unless configured), CPUs otherwise."""
    gpus = cfg.ray.gpus_per_trial
    if gpus is None:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
    return {"cpu": cfg.ray.cpus_per_trial, "gpu": gpus}
