"""Which BN-L1 strength λ (``train.sparsity``) makes a config slim? A small search at its scale.

Network Slimming (Liu et al., ICCV 2017) trains the baseline with λ·Σ|γ| so that unimportant
channels approach zero before the first prune. How far the term can move a γ is the config's
L1 pull budget (``pipeline.budget``: λ·Σlr·1/(1−μ) for SGD; Liu et al.'s CIFAR schedule ≈ 0.66),
so λ is chosen per schedule, not copied.

Each candidate λ trains the chosen streams of the config (default ``ray_configs/demo.yaml``)
once with the same seed and data. Printed per candidate and stream: the budget, the |γ| histogram
of the prunable BatchNorms (the ones the prune stage scores: ``prune.residual``) before and after
training (counts per decade), its quantiles, the step-1 threshold and its ratio to the median
trained |γ| (≤ 0.3: the prune cuts near-zero channels, not the bulk), and the test video
accuracy under the light protocol (``eval.light_clips`` clips, one crop) before and right after
one prune of ``prune.step_fraction`` (no fine-tuning) — what sparsity is for.

    python -m benchmarks.sparsity_search                        # spatial, λ = 0, 1e-5, 1e-4, 1e-3
    python -m benchmarks.sparsity_search --streams spatial temporal --lambdas 0 1e-2 \\
        --set train.epochs=3 --set model.gamma_init=0.5
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from ingest.stage import run_data_stage
from pruning import prune_model
from pruning.groups import channel_groups, group_scores
from pruning.schedule import step_ratio
from pruning.slimming import bn_l1_subgradient, prune_threshold, select_channels
from core.cli import HelpFormatter
from pipeline.budget import l1_budget, stream_budgets
from core.config import ExperimentConfig
from training.data import light_test_loader, make_loaders, stream_data
from training.evaluate import evaluate
from training.loop import seed_everything, train
from training.models import build_stream
from core.overrides import load_config

REPO = Path(__file__).resolve().parents[1]
LAMBDAS = (0.0, 1e-5, 1e-4, 1e-3)  # 0 and Liu et al.'s search range
DECADES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # histogram edges: < 1e-4, 1e-4–1e-3, …, ≥ 1


def gamma_scores(model: torch.nn.Module, residual: bool) -> torch.Tensor:
    """|γ| per prunable channel (a residual group's mean |γ|), as the prune stage scores them."""
    return torch.cat([group_scores(model, group) for group in channel_groups(model, residual=residual)])


def decade_histogram(scores: torch.Tensor) -> list[int]:
    """Counts of ``scores`` per decade bin (edges ``DECADES``): len(DECADES) + 1 counts."""
    edges = torch.tensor(DECADES, dtype=scores.dtype)
    return torch.bincount(torch.bucketize(scores, edges, right=True), minlength=len(DECADES) + 1).tolist()


def train_one(cfg: ExperimentConfig, stream: str, sparsity: float) -> dict:
    """Train ``stream`` with BN-L1 strength ``sparsity`` (the stream's settings otherwise);
    measure |γ|, the budget and the accuracy before and right after one prune."""
    seed = cfg.run_seed(1)
    data = stream_data(cfg, seed)
    loaders = make_loaders(cfg, stream, data, seed)
    light = light_test_loader(cfg, stream, data)
    settings = cfg.stream_train(stream)
    settings.sparsity = sparsity
    seed_everything(seed)
    model = build_stream(stream, cfg.model.arch, len(data.classes), weights=cfg.model.weights,
                         dropout=cfg.stream_dropout(stream), gamma_init=cfg.model.gamma_init,
                         width=cfg.model.width)
    residual = cfg.prune.residual
    initial = gamma_scores(model, residual)
    hook = (lambda m: bn_l1_subgradient(m, sparsity, residual=residual)) if sparsity > 0 else None
    start = time.perf_counter()
    result = train(model, loaders["train"], loaders["val"], settings, after_backward=hook, seed=seed)
    seconds = time.perf_counter() - start
    model, history = result.model, result.state.history
    val = [row["accuracy"] for row in history if row["phase"] == "val"]
    before = evaluate(model, light, len(data.classes), device="cpu", desc="light test")
    scores = gamma_scores(model, residual)
    prune = cfg.stream_prune(stream)
    ratio = step_ratio(1, prune.step_fraction)
    plan = select_channels(model, ratio, residual=residual, min_channels=prune.min_channels, round_to=prune.round_to)
    threshold = prune_threshold(model, plan)
    pruned = prune_model(model, ratio, residual=residual, min_channels=prune.min_channels, round_to=prune.round_to)
    after = evaluate(pruned, light, len(data.classes), device="cpu", desc="light test, pruned")
    videos = len(data.train_videos) + len(data.val_videos)
    budget = l1_budget(settings, _iterations(cfg, stream, videos))
    quantiles = torch.quantile(scores, torch.tensor([0.1, 0.5, 0.9])).tolist()
    return {"stream": stream, "lambda": sparsity, "budget": budget.budget, "budget_text": budget.text(),
            "val_clip_acc": val[-1] if val else math.nan, "gamma_q10": quantiles[0],
            "gamma_median": quantiles[1], "gamma_q90": quantiles[2], "threshold": threshold,
            "threshold_over_median": threshold / quantiles[1] if quantiles[1] > 0 else math.inf,
            "hist_initial": decade_histogram(initial), "hist_trained": decade_histogram(scores),
            "pruned_ratio": ratio, "video_acc": before.video_accuracy, "video_acc_pruned": after.video_accuracy,
            "train_s": seconds}


def _iterations(cfg: ExperimentConfig, stream: str, videos: int) -> int:
    """Iterations an epoch, as the dry run counts them (``pipeline.budget.stream_budgets``)."""
    base = stream_budgets(cfg, videos)[stream][0]
    return base.iterations


def markdown(rows: list[dict]) -> str:
    ratio = rows[0]["pruned_ratio"] * 100
    bins = ["<1e-4", "1e-4–1e-3", "1e-3–0.01", "0.01–0.1", "0.1–1", "≥1"]
    head = ["stream", "λ", "L1 budget", "val clip acc %", "|γ| p10", "|γ| median", "|γ| p90",
            "step-1 threshold / median", f"|γ| per decade, initial ({' | '.join(bins)})", "trained",
            "test video acc % (light)", f"after pruning {ratio:.1f} %, no fine-tune", "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + " ---: |" * len(head)]
    for r in rows:
        cells = [r["stream"], f"{r['lambda']:g}", f"{r['budget']:.3g}", f"{r['val_clip_acc']:.1f}",
                 f"{r['gamma_q10']:.3g}", f"{r['gamma_median']:.3g}", f"{r['gamma_q90']:.3g}",
                 f"{r['threshold_over_median']:.2f}", " / ".join(map(str, r["hist_initial"])),
                 " / ".join(map(str, r["hist_trained"])), f"{r['video_acc']:.1f}",
                 f"{r['video_acc_pruned']:.1f}", f"{r['train_s']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sparsity_search", description=__doc__.split("\n\n")[0],
                                epilog="exit codes: 0 measured; 1 a run failed (traceback); 2 bad command line or config",
                                formatter_class=HelpFormatter)
    p.add_argument("--config", default=str(REPO / "ray_configs" / "demo.yaml"), help="the experiment config searched on")
    p.add_argument("--root", default="runs/sparsity_search", help="experiment root (shards are built once here)")
    p.add_argument("--streams", nargs="+", choices=["spatial", "temporal"], default=["spatial"],
                   help="the streams trained per candidate")
    p.add_argument("--lambdas", type=float, nargs="+", default=list(LAMBDAS), help="the train.sparsity values tried")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value for every candidate (as pipeline.sweep --set)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: ray.cpus_per_trial)")
    args = p.parse_args(argv)
    cfg = load_config(args.config, [f"experiment.root={Path(args.root).resolve()}", *args.overrides])
    torch.set_num_threads(args.threads or max(1, int(cfg.ray.cpus_per_trial)))
    run_data_stage(cfg)
    rows = []
    for sparsity in args.lambdas:
        for stream in args.streams:
            row = train_one(cfg, stream, sparsity)
            print(f"λ={sparsity:g} {stream}: {row}", flush=True)
            rows.append(row)
    print(f"\n{cfg.model.arch} at {cfg.model.input_size} px, prune.residual={cfg.prune.residual}, "
          f"seed {cfg.run_seed(1)}, overrides {args.overrides}:")
    print(markdown(rows))


if __name__ == "__main__":
    main()
