"""The L1 pull budget of a config: how far Network Slimming's λ·Σ|γ| can move a BatchNorm γ.

Each SGD step moves γ by ``lr·λ·sign(γ)`` from the L1 term; with momentum μ a steady push is
amplified by the momentum gain 1/(1 − μ). Over a schedule the most the term can move one γ is

    budget = λ · Σ lr (over every iteration) · 1/(1 − μ)

(computed exactly as torch's SGD accumulates it: step t moves ``lr_t·λ·(1 − μ^(t+1))/(1 − μ)``,
so a schedule of few iterations gains less than 1/(1 − μ); the gain reported is the effective one)
(Liu et al.'s CIFAR schedule: λ 1e-5, lr 0.1 → 0.01 → 0.001 at 50 % / 75 % of 160 epochs, 782
iterations of batch 64 an epoch, μ 0.9: ≈ 0.66, enough to take their initial γ = 0.5 to zero.)
A budget far below the trained |γ| cannot slim: the global threshold then ranks γ values the
penalty never touched. Weight decay d (when BatchNorms are decayed) multiplies γ by
``exp(−d · Σlr/(1 − μ))`` over the same schedule; it pulls harder than L1 wherever d·γ > λ.

AdamW normalises every gradient, so a parameter moves at most about ``lr`` per step whatever λ
is: its bound is ``Σ lr`` (λ only needs to dominate γ's loss gradient to use it), and the
decoupled decay multiplies γ by ``Π(1 − lr·d)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from core.config import STREAMS, ExperimentConfig, TrainConfig
from training.loop import lr_at

# Liu et al. 2017 (Network Slimming), CIFAR: 50,000 images, batch 64 (782 iterations an epoch),
# SGD μ 0.9, lr 0.1 divided by 10 at 50 % and 75 % of 160 epochs, λ 1e-5 (ResNet, DenseNet)
LIU_CIFAR = TrainConfig(epochs=160, batch_size=64, optimizer="sgd", lr=0.1, momentum=0.9,
                        scheduler="multistep", milestones=[80, 120], gamma=0.1, sparsity=1e-5,
                        weight_decay=1e-4)
LIU_CIFAR_ITERATIONS = math.ceil(50_000 / 64)
UCF101_TRAIN_VIDEOS = {1: 9537, 2: 9586, 3: 9624}  # lines of the official trainlist0N.txt


@dataclass
class Budget:
    optimizer: str
    sparsity: float  # λ
    epochs: int
    iterations: int  # per epoch
    lr_sum: float  # Σ lr over every iteration
    gain: float  # momentum gain 1/(1 − μ) (SGD), 1 (AdamW)
    budget: float  # SGD: λ·Σlr·gain; AdamW: Σlr (the most any parameter moves)
    decay_keeps: float  # the factor weight decay alone leaves of γ (1 without decay on BatchNorms)

    def text(self) -> str:
        if self.optimizer == "adamw":
            head = (f"≤ {self.budget:.3g} (adamw: a γ moves ≤ Σlr {self.lr_sum:.3g} whatever λ = "
                    f"{self.sparsity:g}; λ must outweigh γ's loss gradient to use it)")
        else:
            head = (f"{self.budget:.3g} (sgd: λ {self.sparsity:g} × Σlr {self.lr_sum:.3g} × momentum gain "
                    f"{self.gain:.3g})")
        return (f"{head}, {self.epochs} epochs × {self.iterations} iterations; weight decay alone keeps "
                f"{self.decay_keeps:.3g} of γ")


def l1_budget(settings: TrainConfig, iterations: int) -> Budget:
    """The budget of training with ``settings`` for ``settings.epochs`` epochs of ``iterations``."""
    lrs = [lr_at(settings, epoch) for epoch in range(settings.epochs)]
    lr_sum = iterations * sum(lrs)
    decay = settings.weight_decay if settings.bn_weight_decay else 0.0
    if settings.optimizer == "adamw":
        keeps = math.prod((1 - lr * decay) ** iterations for lr in lrs)
        return Budget("adamw", settings.sparsity, settings.epochs, iterations, lr_sum, 1.0, lr_sum, keeps)
    mu = settings.momentum
    # Σ_t lr_t·(1 − μ^(t+1))/(1 − μ): torch's momentum buffer of a constant push after t + 1 steps
    moved = sum(lr * (iterations - (mu ** (e * iterations + 1)) * (1 - mu ** iterations) / (1 - mu))
                for e, lr in enumerate(lrs)) / (1 - mu) if mu > 0 else lr_sum
    gain = moved / lr_sum if lr_sum > 0 else 1.0 / (1.0 - mu)
    return Budget("sgd", settings.sparsity, settings.epochs, iterations, lr_sum, gain,
                  settings.sparsity * moved, math.exp(-decay * moved))


def liu_cifar_budget() -> float:
    """Liu et al.'s CIFAR budget (≈ 0.66), by the same arithmetic."""
    return l1_budget(LIU_CIFAR, LIU_CIFAR_ITERATIONS).budget


def train_videos(cfg: ExperimentConfig) -> tuple[int | None, str]:
    """How many train-list videos the config trains on (before the val split) and where that
    number came from: the shards' manifest, the split list, or the synthetic set's design."""
    manifest = cfg.paths.shards / "manifest.parquet"
    if manifest.is_file():
        import polars as pl
        rows = pl.read_parquet(manifest).filter((pl.col("subset") == "train") & (pl.col("status") == "ok"))
        return rows.height, f"manifest {manifest}"
    d = cfg.data
    if d.synthetic is not None:
        s = d.synthetic
        groups = s.get("groups", 8)
        train_groups = sum(1 for g in range(1, groups + 1) if (g - 1) % 3 != d.split - 1)
        return s.get("classes", 8) * train_groups * s.get("clips", 2), "the synthetic set's design"
    if d.splits:
        path = Path(d.splits) / f"trainlist0{d.split}.txt"
        if path.is_file():
            lines = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
            if d.classes is not None:
                lines = [line for line in lines if line.replace("\\", "/").split("/")[0] in set(d.classes)]
            return len(lines), f"split list {path}"
    if d.classes is None and d.split in UCF101_TRAIN_VIDEOS:
        return UCF101_TRAIN_VIDEOS[d.split], f"the official UCF101 trainlist0{d.split}.txt (not found here)"
    return None, "no manifest, split list or synthetic design to count"


def stream_budgets(cfg: ExperimentConfig, videos: int) -> dict[str, tuple[Budget, Budget]]:
    """Per stream, the baseline's and one fine-tuning step's budget, for ``videos`` train-list
    videos of ``data.clips_per_video`` clips an epoch. The train loader reads every shard that
    holds a train video and drops the val rows from its batches (``training.data.VideoSubset``),
    so with val videos spread over the shards an epoch has about that many clips / batch steps."""
    samples = videos * cfg.data.clips_per_video
    out = {}
    for stream in STREAMS:
        settings = cfg.stream_train(stream)
        iterations = max(1, int(samples // settings.batch_size))
        finetune = cfg.finetune_train(stream)
        out[stream] = (l1_budget(settings, iterations), l1_budget(finetune, iterations))
    return out


def describe_budgets(cfg: ExperimentConfig) -> list[str]:
    """The dry run's lines on the L1 pull budget."""
    videos, source = train_videos(cfg)
    lines = [f"L1 pull budget (how far λ·Σ|γ| can move a γ; Liu et al.'s CIFAR schedule: "
             f"{liu_cifar_budget():.2f}; pipeline.budget):"]
    if videos is None:
        return lines + [f"  unknown: {source}"]
    lines.append(f"  {videos} train-list videos ({source})")
    for stream, (base, step) in stream_budgets(cfg, videos).items():
        lines.append(f"  {stream} baseline: {base.text()}")
        lines.append(f"  {stream} each fine-tuning step: {step.text()}")
    return lines
