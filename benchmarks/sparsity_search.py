"""Which BN-L1 strength λ (``train.sparsity``) for the demo? A small search at the demo's scale.

Network Slimming (Liu et al., ICCV 2017) trains the baseline with λ·Σ|γ| so that unimportant
channels approach zero before the first prune; the paper searched λ over 1e-3 … 1e-5 (1e-4 for
VGG, 1e-5 for ResNet and DenseNet on CIFAR). The demo trains from scratch with AdamW, whose
per-parameter scaling changes what a given λ does, so its λ is chosen here, not copied.

One stream of the demo config (``ray_configs/demo.yaml``: synthetic ring set, resnet18 at 64 px,
the demo's optimizer and epochs) is trained once per λ with the same seed and data. Printed per λ:
val and test video accuracy, the |γ| of the prunable BatchNorms (the ones the prune stage scores:
``prune.residual``) as quantiles and the fraction below ``--small``, and the test video accuracy
right after pruning the demo's last step (one shot, no fine-tuning) — what sparsity is for.

    python -m benchmarks.sparsity_search                        # spatial, λ = 0, 1e-5, 1e-4, 1e-3
    python -m benchmarks.sparsity_search --stream temporal --lambdas 0 1e-4 --epochs 3
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ingest.stage import run_data_stage
from pruning import prune_model
from pruning.groups import channel_groups, group_scores
from pruning.schedule import step_ratio
from pruning.slimming import bn_l1_subgradient
from shards.cli import HelpFormatter
from training.config import ExperimentConfig
from training.data import make_loaders, stream_data
from training.evaluate import evaluate
from training.loop import seed_everything, train
from training.models import build_stream
from training.overrides import load_config

REPO = Path(__file__).resolve().parents[1]
LAMBDAS = (0.0, 1e-5, 1e-4, 1e-3)  # 0 and Liu et al.'s search range


def gamma_scores(model: torch.nn.Module, residual: bool) -> torch.Tensor:
    """|γ| per prunable channel (a residual group's mean |γ|), as the prune stage scores them."""
    return torch.cat([group_scores(model, group) for group in channel_groups(model, residual=residual)])


def train_one(cfg: ExperimentConfig, stream: str, sparsity: float, small: float) -> dict:
    """Train ``stream`` with BN-L1 strength ``sparsity``; measure accuracy, |γ| and one-shot pruning."""
    seed = cfg.run_seed(1)
    data = stream_data(cfg, seed)
    loaders = make_loaders(cfg, stream, data, seed)
    seed_everything(seed)
    model = build_stream(stream, cfg.model.arch, len(data.classes), weights=cfg.model.weights,
                         dropout=cfg.model.dropout)
    residual = cfg.prune.residual
    hook = (lambda m: bn_l1_subgradient(m, sparsity, residual=residual)) if sparsity > 0 else None
    start = time.perf_counter()
    result = train(model, loaders["train"], loaders["val"], cfg.train, after_backward=hook, seed=seed)
    seconds = time.perf_counter() - start
    model, history = result.model, result.state.history
    val = [row["accuracy"] for row in history if row["phase"] == "val"]
    test = evaluate(model, loaders["test"], len(data.classes), device="cpu")
    scores = gamma_scores(model, residual)
    ratio = step_ratio(cfg.prune.steps, cfg.prune.step_fraction)
    pruned = prune_model(model, ratio, residual=residual, min_channels=cfg.prune.min_channels,
                         round_to=cfg.prune.round_to)
    pruned_test = evaluate(pruned, loaders["test"], len(data.classes), device="cpu")
    quantiles = torch.quantile(scores, torch.tensor([0.1, 0.5, 0.9])).tolist()
    return {"lambda": sparsity, "val_clip_acc": val[-1] if val else float("nan"),
            "test_video_acc": test.video_accuracy, "gamma_q10": quantiles[0], "gamma_median": quantiles[1],
            "gamma_q90": quantiles[2], "frac_below_small": float((scores < small).double().mean()),
            "pruned_ratio": ratio, "pruned_test_video_acc": pruned_test.video_accuracy, "train_s": seconds}


def markdown(rows: list[dict], small: float) -> str:
    ratio = rows[0]["pruned_ratio"] * 100
    head = ["λ", "val clip acc %", "test video acc %", "|γ| p10", "|γ| median", "|γ| p90",
            f"|γ| < {small:g}", f"test video acc % after pruning {ratio:.1f} % of prunable channels, no fine-tune",
            "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + " ---: |" * len(head)]
    for r in rows:
        cells = [f"{r['lambda']:g}", f"{r['val_clip_acc']:.1f}", f"{r['test_video_acc']:.1f}",
                 f"{r['gamma_q10']:.3g}", f"{r['gamma_median']:.3g}", f"{r['gamma_q90']:.3g}",
                 f"{r['frac_below_small'] * 100:.1f} %", f"{r['pruned_test_video_acc']:.1f}", f"{r['train_s']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sparsity_search", description=__doc__.split("\n\n")[0],
                                epilog="exit codes: 0 measured; 1 a run failed (traceback); 2 bad command line or config",
                                formatter_class=HelpFormatter)
    p.add_argument("--config", default=str(REPO / "ray_configs" / "demo.yaml"), help="the experiment config searched on")
    p.add_argument("--root", default="runs/sparsity_search", help="experiment root (shards are built once here)")
    p.add_argument("--stream", choices=["spatial", "temporal"], default="spatial", help="the stream trained")
    p.add_argument("--lambdas", type=float, nargs="+", default=list(LAMBDAS), help="the train.sparsity values tried")
    p.add_argument("--epochs", type=int, default=None, help="default: the config's train.epochs")
    p.add_argument("--small", type=float, default=1e-2, help="|γ| below this counts as near zero")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: ray.cpus_per_trial)")
    args = p.parse_args(argv)
    overrides = [f"experiment.root={Path(args.root).resolve()}"]
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    cfg = load_config(args.config, overrides)
    torch.set_num_threads(args.threads or max(1, int(cfg.ray.cpus_per_trial)))
    run_data_stage(cfg)
    rows = []
    for sparsity in args.lambdas:
        row = train_one(cfg, args.stream, sparsity, args.small)
        print(f"λ={sparsity:g}: {row}", flush=True)
        rows.append(row)
    print(f"\n{args.stream} stream, {cfg.model.arch} at {cfg.model.input_size} px, {cfg.train.epochs} epochs "
          f"{cfg.train.optimizer} lr {cfg.train.lr:g}, prune.residual={cfg.prune.residual}, seed {cfg.run_seed(1)}:")
    print(markdown(rows, args.small))


if __name__ == "__main__":
    main()
