"""Tiny in-memory batches for loop, evaluation and schedule tests (any iterable of batch
dicts is a real data source for `training.loop.train`)."""
import torch

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
