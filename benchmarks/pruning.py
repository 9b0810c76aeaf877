"""Does pruning make the streams really smaller and faster? Params, FLOPs and CPU latency vs unpruned.

For each architecture, stream, pruning mode (``internal``: the channels inside each block, the
paper config's ``prune.residual: false``; ``residual``: also the residual-tied ones) and thread
count, every grid ratio (1 − 0.96^k) is timed against the unpruned model in the same process:
median latency of repeated forward passes (batch 1 and batch 16, inference mode, eval), the two
models alternating so both see the same machine load. One row per (arch, stream, pruning,
threads, step): the median latencies (ms), the FLOPs speedup, the measured latency speedup, and
their ratio ("efficiency"); the goal at 21.72, 24.86 and 43.53 % (steps 6, 7, 14) is
efficiency ≥ 0.8. Each row records the 1-minute load average when it was measured.

On a machine shared with other jobs (load average above the core count) run several threads
as ``OMP_WAIT_POLICY=PASSIVE python -m benchmarks.pruning …``: libgomp's default spin-waiting
threads then wait at every layer's barrier for a thread the kernel has descheduled (measured
here, load 21 on 2 cores, ResNet-50 batch 1, 2 threads: 6.4 s per forward spinning, 0.73 s
passive, 0.60 s with 1 thread). Each row records the policy (``omp_wait_policy``).

``--fold-bn`` folds every eval BatchNorm into the convolution before it, in both models (what
an inference deployment does; the weights change, the function does not). ``--layers`` also
prints, per case, the time and FLOPs of each layer kind of both models (forward hooks with
perf_counter, the smallest batch size), and the efficiency the pruned model would reach if
every layer with FLOPs kept pace with them: where a pruned model loses against its FLOPs.

BatchNorm γ are drawn at random (seeded, uniform) to stand in for a trained model's: only
where channels go matters here, not the accuracy.

    python -m benchmarks.pruning                                  # full grid k=1..17, internal, 224 px
    python -m benchmarks.pruning --steps 6 7 14 --pruning internal residual --threads 1 2 --repeats 3 --csv out.csv
    python -m benchmarks.pruning --archs resnet50 --streams spatial --steps 5 14 17 --input-size 112 --repeats 5   # quick
"""
from __future__ import annotations

import argparse
import collections
import copy
import os
import statistics
import time

import polars as pl
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.resnet import BasicBlock, Bottleneck
from tqdm import tqdm

from pruning import prune_model
from pruning.accounting import pruning_stats
from pruning.groups import internal_groups
from core.cli import RawHelpFormatter
from training.models import build_stream

GOAL_STEP = 14  # 1 − 0.96^14 = 43.53 %
GOAL_STEPS = (6, 7, 14)  # 21.72, 24.86, 43.53 %: issue #21's goal steps
GOAL = 0.8  # latency speedup / FLOPs speedup
MODES = ("internal", "residual")  # pruning modes: prune_model(residual=False / True)


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


def fold_bn(model: nn.Module) -> nn.Module:
    """A copy of an eval-mode model with every BatchNorm folded into the convolution before it
    (``torch.fx``: conv + BN → one conv with bias); same outputs up to rounding."""
    from torch.fx.experimental.optimization import fuse
    return fuse(copy.deepcopy(model).eval())


def prepare(model: nn.Module, channels_last: bool, fold: bool = False) -> nn.Module:
    model = fold_bn(model) if fold else model
    return model.to(memory_format=torch.channels_last) if channels_last else model


def layer_kinds(model: nn.Module) -> dict[str, str]:
    """The kind of each timed module of a torchvision ResNet, for ``layer_profile``: stem conv / bn,
    ``conv<i> <k>x<k>`` inside blocks, downsample conv, internal BNs (those ``prune.residual: false``
    prunes) and residual BNs, relu, block add (a block's own time), pools, fc."""
    internal = {name for group in internal_groups(model) for name in group.bns}
    kinds = {}
    for name, module in model.named_modules():
        if name in ("conv1", "bn1"):
            kinds[name] = f"stem {name[:-1]}"
        elif isinstance(module, nn.Conv2d):
            kinds[name] = ("downsample conv" if ".downsample." in name else
                           f"{name.rsplit('.', 1)[-1]} {module.kernel_size[0]}x{module.kernel_size[1]}")
        elif isinstance(module, nn.BatchNorm2d):
            kinds[name] = "bn internal" if name in internal else "bn residual"
        elif isinstance(module, nn.ReLU):
            kinds[name] = "relu"
        elif isinstance(module, (BasicBlock, Bottleneck)):
            kinds[name] = "block add"
        elif isinstance(module, (nn.MaxPool2d, nn.AdaptiveAvgPool2d)):
            kinds[name] = "pools"
        elif isinstance(module, nn.Linear):
            kinds[name] = "fc"
    return kinds


def layer_flops(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """FLOPs of one forward of ``x`` per layer kind (convolutions and the fc)."""
    modules, kinds = dict(model.named_modules()), layer_kinds(model)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    out = collections.defaultdict(float)
    for key, counts in counter.get_flop_counts().items():
        name = key.partition(".")[2]  # "ResNet.layer1.0.conv1" -> "layer1.0.conv1"
        if name in modules and isinstance(modules[name], (nn.Conv2d, nn.Linear)):
            out[kinds[name]] += sum(counts.values())
    return out


def layer_times(model: nn.Module, x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median seconds per forward of ``x`` per layer kind (forward pre/post hooks with
    perf_counter; a block's own time less its children's is its residual addition), plus
    ``total``. Works on the eager model only (not on a folded one)."""
    kinds_of = layer_kinds(model)
    modules = {n: m for n, m in model.named_modules() if n in kinds_of}
    spent, starts = collections.defaultdict(float), {}
    handles = []
    for name, module in modules.items():
        handles.append(module.register_forward_pre_hook(
            lambda mod, inp, name=name: starts.__setitem__(name, time.perf_counter())))
        handles.append(module.register_forward_hook(
            lambda mod, inp, out, name=name: spent.__setitem__(name, spent[name] + time.perf_counter() - starts[name])))
    samples = collections.defaultdict(list)
    try:
        with torch.inference_mode():
            model(x)  # warm-up
            for _ in range(repeats):
                spent.clear()
                start = time.perf_counter()
                model(x)
                total = time.perf_counter() - start
                kinds = collections.defaultdict(float)
                for name, seconds in spent.items():
                    kind = kinds_of[name]
                    if kind == "block add":  # the block's own time less what its timed children took
                        seconds -= sum(v for child, v in spent.items() if child.startswith(name + "."))
                    kinds[kind] += seconds
                kinds["total"] = total
                for kind, seconds in kinds.items():
                    samples[kind].append(seconds)
    finally:
        for handle in handles:
            handle.remove()
    return {kind: statistics.median(values) for kind, values in samples.items()}


def layer_profile(base: nn.Module, pruned: nn.Module, x: torch.Tensor, repeats: int) -> pl.DataFrame:
    """Per layer kind: time (ms) and GFLOPs of ``base`` and ``pruned`` on ``x``, their speedups and
    each kind's share of the unpruned time. Alternates the two models ``repeats`` times."""
    flops = layer_flops(base, x), layer_flops(pruned, x)
    runs = [[], []]
    for _ in range(max(1, repeats)):
        for index, model in enumerate((base, pruned)):
            runs[index].append(layer_times(model, x, 1))
    times = [{kind: statistics.median(run[kind] for run in model_runs) for kind in model_runs[0]}
             for model_runs in runs]
    rows = []
    for kind in sorted(times[0], key=lambda k: (k != "total", -times[0][k])):
        base_gf = (sum(flops[0].values()) if kind == "total" else flops[0].get(kind, 0.0)) / 1e9
        pruned_gf = (sum(flops[1].values()) if kind == "total" else flops[1].get(kind, 0.0)) / 1e9
        rows.append({"layers": kind, "base_ms": round(1000 * times[0][kind], 2),
                     "pruned_ms": round(1000 * times[1].get(kind, 0.0), 2),
                     "time_speedup": round(times[0][kind] / times[1][kind], 2) if times[1].get(kind) else None,
                     "share_of_base_time_%": round(100 * times[0][kind] / times[0]["total"], 1),
                     "base_gflops": round(base_gf, 3), "pruned_gflops": round(pruned_gf, 3),
                     "flops_speedup": round(base_gf / pruned_gf, 2) if pruned_gf else None})
    return pl.DataFrame(rows)


def flops_paced_efficiency(profile: pl.DataFrame) -> tuple[float, float]:
    """What a ``layer_profile`` allows: the latency speedup and efficiency the pruned model would
    reach if every layer kind with FLOPs ran exactly at its FLOPs speedup while the rest (BNs,
    ReLUs, additions, pools, time between hooks) took what was measured. Below 0.8 the goal is
    out of reach for any convolution kernel: the layers FLOPs do not count decide it."""
    rows = {row["layers"]: row for row in profile.iter_rows(named=True)}
    total = rows.pop("total")
    paced = total["pruned_ms"] + sum(row["base_ms"] / row["flops_speedup"] - row["pruned_ms"]
                                     for row in rows.values() if row["flops_speedup"])
    speedup = total["base_ms"] / paced
    return speedup, speedup / total["flops_speedup"]


def set_threads(threads: int | None) -> int:
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def benchmark(args, profiles: list | None = None) -> pl.DataFrame:
    """The table: one row per (arch, stream, pruning mode, threads, step). ``args`` as parsed by
    ``main`` (``pruning`` a list of MODES, ``threads`` a list of counts or None for torch's
    default; ``benchmarks.gpu_check`` builds its own namespace, without the CLI-only options).
    With ``profiles`` a list and ``args.layers``, each case's ``layer_profile`` is appended to it
    as (title, table)."""
    modes, threads = args.pruning, args.threads or [None]
    fold, layers = getattr(args, "fold_bn", False), getattr(args, "layers", False)
    device, amp = getattr(args, "device", "cpu"), getattr(args, "amp", False)
    profiling = profiles is not None and layers and device == "cpu"
    rows = []
    jobs = [(arch, stream, mode) for arch in args.archs for stream in args.streams for mode in modes]
    progress = tqdm(total=len(jobs) * len(args.steps) * len(threads), desc="cases", unit="case")
    for arch, stream, mode in jobs:
        residual = mode == "residual"
        base = random_gammas(build_stream(stream, arch, 101), args.seed)
        inputs = {b: torch.randn(b, base.conv1.in_channels, args.input_size, args.input_size, device=device)
                  for b in args.batch_sizes}
        if args.channels_last:
            inputs = {b: x.to(memory_format=torch.channels_last) for b, x in inputs.items()}
        timed_base = prepare(copy.deepcopy(base).to(device), args.channels_last, fold)
        # the profile hooks eager modules: the timed models themselves unless BNs were folded
        eager_base = (prepare(copy.deepcopy(base), args.channels_last) if fold else timed_base) if profiling else None
        for k in args.steps:
            ratio = 1 - 0.96 ** k
            pruned = prune_model(base, ratio, residual=residual, min_channels=args.min_channels,
                                 round_to=args.round_to)
            stats = pruning_stats(base, pruned, residual=residual, input_size=args.input_size)
            timed_pruned = prepare(pruned.to(device), args.channels_last, fold)
            for count in threads:
                used = set_threads(count)
                row = {"arch": arch, "stream": stream, "pruning": mode, "threads": used, "step": k,
                       "prune_ratio": round(100 * ratio, 2),
                       **{key: round(100 * value, 2) for key, value in stats.items()},
                       "flops_speedup": round(1 / (1 - stats["flops_removed"]), 3)}
                for b, x in inputs.items():
                    base_seconds, pruned_seconds = paired_latency(timed_base, timed_pruned, x, args.repeats, amp=amp)
                    speedup = base_seconds / pruned_seconds
                    row[f"base_ms_b{b}"] = round(1000 * base_seconds, 3)
                    row[f"pruned_ms_b{b}"] = round(1000 * pruned_seconds, 3)
                    row[f"latency_speedup_b{b}"] = round(speedup, 3)
                    row[f"efficiency_b{b}"] = round(speedup / row["flops_speedup"], 3)
                row.update(round_to=args.round_to, min_channels=args.min_channels,
                           channels_last=bool(args.channels_last), fold_bn=bool(fold), input_size=args.input_size,
                           repeats=args.repeats, omp_wait_policy=os.environ.get("OMP_WAIT_POLICY", ""),
                           load_1min=round(os.getloadavg()[0], 2))
                rows.append(row)
                if profiling:
                    x = inputs[min(inputs)]
                    eager_pruned = prepare(pruned, args.channels_last) if fold else timed_pruned
                    title = (f"{arch} {stream} {mode} step {k} ({100 * ratio:.2f} %), {used} threads, "
                             f"batch {x.shape[0]}, round_to={args.round_to}, channels_last={bool(args.channels_last)}, "
                             f"eager (no BN folding), load {os.getloadavg()[0]:.2f}")
                    profiles.append((title, layer_profile(eager_base, eager_pruned, x, args.repeats)))
                progress.update()
    progress.close()
    return pl.DataFrame(rows)


def goal_lines(table: pl.DataFrame, batch_sizes) -> list[str]:
    """One verdict per goal-step row and batch size."""
    lines = []
    for row in table.filter(pl.col("step").is_in(list(GOAL_STEPS))).iter_rows(named=True):
        for b in batch_sizes:
            eff = row[f"efficiency_b{b}"]
            lines.append(f"{row['arch']} {row['stream']} {row['pruning']} {row['threads']} thr at "
                         f"{row['prune_ratio']:.2f} %, batch {b}: latency speedup {row[f'latency_speedup_b{b}']:.2f}x "
                         f"vs FLOPs speedup {row['flops_speedup']:.2f}x -> efficiency {eff:.2f} "
                         f"({'meets' if eff >= GOAL else 'misses'} the {GOAL} goal)")
    return lines


def readme_table(table: pl.DataFrame) -> str:
    """The compact Markdown table docs/benchmarks.md quotes: per (arch, stream, pruning, threads, memory
    format, round_to, BN folding) a row of FLOPs speedups, then per batch size a row of efficiencies (latency
    speedup in brackets; bold: ≥ the goal), a column per step; the last column the range of
    1-minute load averages of those rows."""
    folded = (pl.when(pl.col("fold_bn")).then(pl.lit(", BN folded")).otherwise(pl.lit(""))
              if "fold_bn" in table.columns else pl.lit(""))
    table = table.with_columns(
        setting=pl.concat_str([pl.when(pl.col("channels_last")).then(pl.lit("channels_last"))
                               .otherwise(pl.lit("NCHW")), pl.lit(", round_to "), pl.col("round_to").cast(pl.String),
                               folded])
        if {"channels_last", "round_to"} <= set(table.columns) else pl.lit(""))
    steps = sorted(set(table["step"]))
    ratio = dict(zip(table["step"], table["prune_ratio"]))
    batches = sorted(int(c.rsplit("_b", 1)[1]) for c in table.columns if c.startswith("efficiency_b"))
    head = (["arch", "stream", "pruning", "threads", "setting", "row"]
            + [f"k={k} ({ratio[k]:.2f} %)" for k in steps] + ["load"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    names = ["arch", "stream", "pruning", "threads", "setting"]
    for key in table.select(names).unique(maintain_order=True).iter_rows():
        part = table.filter(pl.all_horizontal([pl.col(n) == v for n, v in zip(names, key)]))
        by_step = {row["step"]: row for row in part.iter_rows(named=True)}
        load = f"{part['load_1min'].min():.1f}–{part['load_1min'].max():.1f}" if "load_1min" in part.columns else ""
        key = [str(v) for v in key]
        lines.append("| " + " | ".join(key + ["FLOPs speedup"] + [
            f"{by_step[k]['flops_speedup']:.2f}×" if k in by_step else "" for k in steps] + [load]) + " |")
        for b in batches:
            cells = []
            for k in steps:
                row = by_step.get(k)
                if row is None:
                    cells.append("")
                    continue
                eff = row[f"efficiency_b{b}"]
                mark = "**" if eff >= GOAL else ""
                cells.append(f"{mark}{eff:.2f}{mark} ({row[f'latency_speedup_b{b}']:.2f}×)")
            lines.append("| " + " | ".join(key + [f"eff. b{b} (latency ×)"] + cells + [""]) + " |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pruning", description=__doc__,
                                     epilog="exit codes: 0 measured; "
                                            "1 a measurement failed (traceback); 2 bad command line",
                                     formatter_class=RawHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["resnet50", "resnet101"], help="torchvision ResNets")
    parser.add_argument("--streams", nargs="+", default=["spatial", "temporal"], choices=["spatial", "temporal"],
                        help="streams (input channels 3 or 20)")
    parser.add_argument("--pruning", nargs="+", default=["internal"], choices=MODES,
                        help="pruning modes: internal (block-internal channels only, the paper config's "
                             "prune.residual: false) and/or residual (also the residual-tied channels)")
    parser.add_argument("--steps", nargs="+", type=int, default=list(range(1, 18)),
                        help="grid steps k (ratio 1 − 0.96^k); 6, 7, 14 are 21.72, 24.86, 43.53 %%")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 16], help="latency batch sizes")
    parser.add_argument("--input-size", type=int, default=224, help="input side in pixels")
    parser.add_argument("--repeats", type=int, default=10, help="timed forward passes; median kept")
    parser.add_argument("--min-channels", type=int, default=8, help="channels a layer keeps at least")
    parser.add_argument("--round-to", type=int, default=8, help="pruned widths are multiples of this")
    parser.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    parser.add_argument("--fold-bn", action="store_true",
                        help="fold eval BatchNorms into the convolutions before timing (both models)")
    parser.add_argument("--layers", action="store_true",
                        help="also print per layer kind the time and FLOPs of both models (batch: the smallest)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (the GPU goal is at batch 64 with AMP)")
    parser.add_argument("--threads", nargs="+", type=int, default=None,
                        help="torch intra-op thread counts, each timed (default: torch's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random γ standing in for trained ones")
    parser.add_argument("--csv", help="also write the table here (every column)")
    parser.add_argument("--markdown", help="also write the compact table of docs/benchmarks.md (efficiency per step) here")
    parser.add_argument("--from-csv", nargs="+", metavar="CSV",
                        help="measure nothing: read these --csv tables (concatenated) and print / write them")
    args = parser.parse_args(argv)
    for name in ("steps", "batch_sizes", "threads"):
        values = getattr(args, name) or []
        if any(v < 1 for v in values):
            parser.error(f"--{name.replace('_', '-')}: every value must be >= 1, got {values}")
    for name in ("input_size", "repeats", "min_channels", "round_to"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


SHOWN = ["arch", "stream", "pruning", "threads", "step", "prune_ratio", "params_removed", "flops_removed",
         "flops_speedup"]


def main(argv=None) -> None:
    args = parse_args(argv)
    profiles = []
    if args.from_csv:  # the settings are the saved rows' own, not this command line's
        table = pl.concat([pl.read_csv(path) for path in args.from_csv], how="diagonal_relaxed")
        args.batch_sizes = sorted(int(c.rsplit("_b", 1)[1]) for c in table.columns if c.startswith("efficiency_b"))
        print(f"\nfrom {', '.join(args.from_csv)}: settings per row in its columns (input_size, repeats, "
              f"round_to, channels_last, fold_bn); nothing measured")
    else:
        table = benchmark(args, profiles)
        print(f"\ninput {args.input_size} px, median of {args.repeats}, round_to={args.round_to}, "
              f"min_channels={args.min_channels}, channels_last={args.channels_last}, fold_bn={args.fold_bn}; "
              f"percentages removed, speedups vs unpruned in the same process; load_1min: the 1-minute load "
              f"average when the row was measured ({os.cpu_count()} CPUs)")
    shown = SHOWN + [f"{key}_b{b}" for b in args.batch_sizes for key in ("latency_speedup", "efficiency")]
    shown += [c for c in ("channels_last", "load_1min") if c in table.columns]
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=250, tbl_formatting="MARKDOWN",
                   tbl_hide_column_data_types=True, tbl_hide_dataframe_shape=True):
        print(table.select(shown))
        for title, profile in profiles:
            print(f"\nper layer kind: {title}")
            print(profile)
            speedup, efficiency = flops_paced_efficiency(profile)
            print(f"if every layer with FLOPs kept pace with them (the rest as measured): latency speedup "
                  f"{speedup:.2f}x, efficiency {efficiency:.2f}")
    if args.csv and not args.from_csv:
        table.write_csv(args.csv)
    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write(readme_table(table) + "\n")
    for line in goal_lines(table, args.batch_sizes):
        print(line)


if __name__ == "__main__":
    main()
