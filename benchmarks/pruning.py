"""Does pruning make the streams really smaller and faster? Params, FLOPs and CPU latency vs unpruned.

For each architecture and stream, every grid ratio (1 − 0.96^k) is timed against the unpruned
model in the same process: median latency of repeated forward passes (batch 1 and batch 16,
inference mode, eval), the two models alternating so both see the same machine load. Reports the median latencies (ms), the FLOPs speedup, the measured latency speedup, and their
ratio ("efficiency"); the goal at 43.53 % is efficiency ≥ 0.8.

BatchNorm γ are drawn at random (seeded, uniform) to stand in for a trained model's: only
where channels go matters here, not the accuracy.

    python -m benchmarks.pruning                                  # full grid, 224 px
    python -m benchmarks.pruning --input-size 112 --steps 5 14 17 --repeats 5   # quick
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import polars as pl
import torch
from torch import nn
from tqdm import tqdm

from pruning import prune_model
from pruning.accounting import count_flops, pruning_stats
from training.models import build_stream

GOAL_STEP = 14  # 1 − 0.96^14 = 43.53 %


def paired_latency(base: nn.Module, pruned: nn.Module, x: torch.Tensor, repeats: int,
                   warmup: int = 2, amp: bool = False) -> tuple[float, float]:
    """Median seconds per forward of ``base`` and ``pruned``, timed alternately so that both see
    the same machine load. On a GPU each forward is synchronised; ``amp``: bf16 autocast."""
    times = {id(base): [], id(pruned): []}
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    with torch.inference_mode(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        for index in range(warmup + repeats):
            for model in (base, pruned):
                sync()
                start = time.perf_counter()
                model(x)
                sync()
                if index >= warmup:
                    times[id(model)].append(time.perf_counter() - start)
    return statistics.median(times[id(base)]), statistics.median(times[id(pruned)])


def random_gammas(model: nn.Module, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.copy_(torch.rand(module.num_features, generator=generator) + 1e-3)
    return model.eval()


def prepare(model: nn.Module, channels_last: bool) -> nn.Module:
    return model.to(memory_format=torch.channels_last) if channels_last else model


def benchmark(args) -> pl.DataFrame:
    rows = []
    jobs = [(arch, stream) for arch in args.archs for stream in args.streams]
    progress = tqdm(total=len(jobs) * len(args.steps), desc="models", unit="model")
    for arch, stream in jobs:
        base = random_gammas(build_stream(stream, arch, 101), args.seed)
        device, amp = getattr(args, "device", "cpu"), getattr(args, "amp", False)
        inputs = {b: torch.randn(b, base.conv1.in_channels, args.input_size, args.input_size, device=device)
                  for b in args.batch_sizes}
        if args.channels_last:
            inputs = {b: x.to(memory_format=torch.channels_last) for b, x in inputs.items()}
        timed_base = prepare(copy.deepcopy(base).to(device), args.channels_last)
        for k in args.steps:
            ratio = 1 - 0.96 ** k
            pruned = prune_model(base, ratio, residual=args.residual, min_channels=args.min_channels,
                                 round_to=args.round_to)
            stats = pruning_stats(base, pruned, residual=args.residual, input_size=args.input_size)
            row = {"arch": arch, "stream": stream, "step": k, "prune_ratio": round(100 * ratio, 2),
                   **{key: round(100 * value, 2) for key, value in stats.items()},
                   "flops_speedup": round(1 / (1 - stats["flops_removed"]), 3)}
            pruned = prepare(pruned.to(device), args.channels_last)
            for b, x in inputs.items():
                base_seconds, pruned_seconds = paired_latency(timed_base, pruned, x, args.repeats, amp=amp)
                speedup = base_seconds / pruned_seconds
                row[f"base_ms_b{b}"] = round(1000 * base_seconds, 3)
                row[f"pruned_ms_b{b}"] = round(1000 * pruned_seconds, 3)
                row[f"latency_speedup_b{b}"] = round(speedup, 3)
                row[f"efficiency_b{b}"] = round(speedup / row["flops_speedup"], 3)
            rows.append(row)
            progress.update()
    progress.close()
    return pl.DataFrame(rows)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """The module doc as written, and every option's default."""


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pruning", description=__doc__,
                                     epilog="exit codes: 0 measured; "
                                            "1 a measurement failed (traceback); 2 bad command line",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["resnet50", "resnet101"], help="torchvision ResNets")
    parser.add_argument("--streams", nargs="+", default=["spatial", "temporal"], help="streams (input channels 3 or 20)")
    parser.add_argument("--steps", nargs="+", type=int, default=list(range(1, 18)),
                        help="grid steps k (ratio 1 − 0.96^k); 14 is 43.53 %%")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 16], help="latency batch sizes")
    parser.add_argument("--input-size", type=int, default=224, help="input side in pixels")
    parser.add_argument("--repeats", type=int, default=10, help="timed forward passes; median kept")
    parser.add_argument("--residual", action=argparse.BooleanOptionalAction, default=True,
                        help="also prune residual-tied channels (default: on)")
    parser.add_argument("--min-channels", type=int, default=8, help="channels a layer keeps at least")
    parser.add_argument("--round-to", type=int, default=8, help="pruned widths are multiples of this")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (the GPU goal is at batch 64 with AMP)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--csv", help="also write the table here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    table = benchmark(args)
    print(f"\ninput {args.input_size} px, {torch.get_num_threads()} threads, median of {args.repeats}, "
          f"residual={args.residual}, round_to={args.round_to}, min_channels={args.min_channels}; "
          f"percentages removed, speedups vs unpruned in the same process")
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=250, tbl_formatting="MARKDOWN",
                   tbl_hide_column_data_types=True, tbl_hide_dataframe_shape=True):
        print(table)
    if args.csv:
        table.write_csv(args.csv)
    goal = table.filter(pl.col("step") == GOAL_STEP)
    for row in goal.iter_rows(named=True):
        for b in args.batch_sizes:
            verdict = "meets" if row[f"efficiency_b{b}"] >= 0.8 else "misses"
            print(f"{row['arch']} {row['stream']} at 43.53 %, batch {b}: latency speedup "
                  f"{row[f'latency_speedup_b{b}']:.2f}x vs FLOPs speedup {row['flops_speedup']:.2f}x "
                  f"-> efficiency {row[f'efficiency_b{b}']:.2f} ({verdict} the 0.8 goal)")


if __name__ == "__main__":
    main()
