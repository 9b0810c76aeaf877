"""Tiny in-memory batches for loop, evaluation and schedule tests (any iterable of batch
dicts is a real data source for `training.loop.train`), and an experiment whose step-0
checkpoint a pruning chain on them starts from."""
import torch

from training.checkpoint import save_checkpoint
from core.config import ExperimentConfig
from training.models import build_stream

CLASSES = ["red", "green", "blue"]


def colour_batches(n_batches=3, seed=0, *, batch=6, size=32, shuffle_labels=False):
    """Images whose brightest channel is the class: learnable in a few steps.
    ``shuffle_labels`` shifts every label by one (a set the model must get wrong)."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for b in range(n_batches):
        label = torch.randint(0, 3, (batch,), generator=g)
        x = torch.rand(batch, 3, size, size, generator=g) * 0.5
        x[torch.arange(batch), label] += 0.5
        if shuffle_labels:
            label = (label + 1) % 3
        batches.append({"x": x, "label": label, "video": [f"s{seed}_v{b}_{i}" for i in range(batch)],
                        "clip": torch.zeros(batch, dtype=torch.int64)})
    return batches


def colour_experiment(root, **sections) -> ExperimentConfig:
    """A pruning schedule over the colour batches, with a random unpruned spatial checkpoint;
    ``sections`` update the config's sections key by key (``prune={"steps": 3}``)."""
    data = {
        "experiment": {"name": "t", "root": str(root), "seed": 3},
        "model": {"arch": "resnet18", "input_size": 32},
        "train": {"batch_size": 6, "optimizer": "sgd", "lr": 0.05, "weight_decay": 0.0, "device": "cpu",
                  "channels_last": False, "amp": False, "val_fraction": 0.0},
        "prune": {"steps": 2, "step_fraction": 0.04, "finetune_epochs": 1, "lr": 0.01, "sparsity": 1e-4,
                  "residual": True, "round_to": 1},
        "fusion": {"methods": ["mean"]},  # no SVM: no train-clip scores (the chains here get no such loader)
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    cfg = ExperimentConfig.from_dict(data)
    torch.manual_seed(0)
    model = build_stream("spatial", "resnet18", len(CLASSES))
    save_checkpoint(cfg.paths.checkpoint("spatial", 1, 0), model, epoch=0, config=cfg, classes=CLASSES)
    return cfg
