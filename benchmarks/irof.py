"""IROF throughput: quantus.IROF vs analysis.irof vs the bound (the forward passes alone).

One run, one model, the same inputs and SLIC segments for all three:

- quantus: ``quantus.IROF`` over the whole set as one batch (its fastest setting; it segments
  the inputs itself, as it always does),
- ours: ``analysis.irof.irof`` with the segments given, at the bound's best batch size
  (and once more computing SLIC itself),
- bound: only the ``n_segments + 1`` forward passes per sample that IROF needs, on the very
  inputs IROF builds (recorded once, replayed), at the best of several batch sizes (chosen on
  random inputs).

Contenders are timed in interleaved rounds (order rotated every round); ``ours / bound`` is the
median of the per-round ratios, with their range, since CPU timings here vary by ~10-20 %
from one call to the next.

    python -m benchmarks.irof --stream temporal --size 64 --samples 8 --batch-sizes 128,256 --repeats 7
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
import torchvision

from analysis.irof import irof, quantus_irof, slic_segments


# glibc: keep freed blocks instead of returning them to the kernel. Large activations are
# otherwise mmap'ed and unmapped on every forward pass; those page faults cost ~10-30 % of the
# CPU time here (as sys time) and vary with the host, which made the ratios swing. mallopt()
# at run time caps the threshold at 32 MiB, so the benchmark re-executes itself with the
# environment set (the same for every contender; CROSSROADS_BENCH_MALLOC=0 turns this off).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 32), "MALLOC_TRIM_THRESHOLD_": str(1 << 36)}


def keep_freed_memory() -> None:
    if os.environ.get("CROSSROADS_BENCH_MALLOC") == "0" or all(k in os.environ for k in MALLOC_ENV):
        return
    os.execve(sys.executable, [sys.executable, "-m", "benchmarks.irof", *sys.argv[1:]], {**os.environ, **MALLOC_ENV})


def build_model(channels: int, classes: int, device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=classes)
    model.conv1 = torch.nn.Conv2d(channels, 64, 7, 2, 3, bias=False)
    return model.to(device).eval()


def blocky_images(n: int, channels: int, size: int, seed: int = 0) -> np.ndarray:
    """Piecewise-smooth random images: SLIC finds image-like superpixels in them."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.normal(size=(n, channels, size // 8, size // 8)).astype(np.float32))
    x = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")
    return (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))).numpy()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def forward_passes(model, passes: int, shape: tuple, batch_size: int, device: str):
    """A function running ``passes`` forward passes alone at ``batch_size`` (the bound)."""
    x = torch.randn(batch_size, *shape, device=device)

    def run():
        with torch.inference_mode():
            for start in range(0, passes, batch_size):
                model(x[:min(batch_size, passes - start)])
        sync(device)

    return run


class InputRecorder(torch.nn.Module):
    """The model, keeping a copy of every input batch it is called with."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model, self.batches = model, []

    def forward(self, x):
        self.batches.append(x.clone())
        return self.model(x)


def replay(model, batches: list[torch.Tensor], device: str):
    """A function running the forward passes on exactly these batches (the bound)."""
    def run():
        with torch.inference_mode():
            for x in batches:
                model(x)
        sync(device)
    return run


class ForwardTimer(torch.nn.Module):
    """The model, adding the wall time of its forward passes to ``seconds`` (device synced)."""

    def __init__(self, model: torch.nn.Module, device: str):
        super().__init__()
        self.model, self.device, self.seconds = model, device, 0.0

    def forward(self, x):
        sync(self.device)
        start = time.perf_counter()
        out = self.model(x)
        sync(self.device)
        self.seconds += time.perf_counter() - start
        return out


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """The module doc as written, and every option's default."""


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.irof", description=__doc__,
                                     epilog="exit codes: 0 measured; "
                                            "1 a measurement failed (traceback); 2 bad command line",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--stream", choices=["spatial", "temporal"], default="temporal", help="model and input kind")
    parser.add_argument("--size", type=int, default=64, help="input height and width")
    parser.add_argument("--samples", type=int, default=8, help="inputs explained")
    parser.add_argument("--classes", type=int, default=101, help="model outputs")
    parser.add_argument("--batch-sizes", default="32,64,128,256", help="tried for the bound (comma-separated)")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cuda where available")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    keep_freed_memory()
    run(args)


def run(args: argparse.Namespace, log=print) -> dict:
    """The whole benchmark for parsed ``args``; prints the table through ``log`` and returns
    the headline numbers (``ours_over_bound``, ``ours_over_quantus``: medians of the paired
    rounds; ``forward_share``), so benchmarks.gpu_check can call it in its own process."""
    kept = all(k in os.environ for k in MALLOC_ENV)

    channels = 3 if args.stream == "spatial" else 20
    model = build_model(channels, args.classes, args.device)
    x = blocky_images(args.samples, channels, args.size)
    rng = np.random.default_rng(1)
    attributions = rng.random((args.samples, args.size, args.size)).astype(np.float32)
    target = rng.integers(0, args.classes, args.samples)
    segments = slic_segments(x)
    passes = int(sum(len(np.unique(s)) + 1 for s in segments))
    log(f"{args.stream} stream, {channels}x{args.size}x{args.size}, {args.samples} samples, "
        f"{passes} forward passes, device {args.device}, {torch.get_num_threads()} threads, "
        f"freed memory kept: {kept}")

    bound_runs = {bs: forward_passes(model, passes, x.shape[1:], bs, args.device)
                  for bs in map(int, args.batch_sizes.split(","))}
    bounds = {}
    for bs, bound_run in bound_runs.items():
        bound_run()  # warm-up
        bounds[bs] = min(timed(bound_run) for _ in range(args.repeats))
        log(f"  bound at batch {bs:4d}: {args.samples / bounds[bs]:8.2f} samples/s")
    best_bs = min(bounds, key=bounds.get)

    def ours(given_segments):
        irof(model, x, attributions, target, segments=given_segments, batch_size=best_bs)
        sync(args.device)

    def reference():
        quantus_irof(model, x, attributions[:, None], target, batch_size=args.samples)

    # The bound proper: the very inputs IROF feeds the model at that batch size, materialised
    # beforehand, so only the forward passes are timed.
    recorder = InputRecorder(model).eval()
    irof(recorder, x, attributions, target, segments=segments, batch_size=best_bs)
    assert sum(len(b) for b in recorder.batches) == passes

    # Interleaved rounds: each round times every contender once, in a rotated order. Per-round
    # ratios pair ours with the bound of the same round, so slow drifts (clock, memory, other
    # processes) cancel; the median over rounds and its range are reported.
    ours(segments)  # warm-up
    runs = {"quantus.IROF": reference, "ours (segments given)": lambda: ours(segments),
            "ours (computing SLIC)": lambda: ours(None),
            "bound (forward passes)": replay(model, recorder.batches, args.device)}
    times = {name: [] for name in runs}
    for round_ in range(args.repeats):
        names = list(runs)
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            times[name].append(timed(runs[name]))
    best = {name: min(t) for name, t in times.items()}
    bound_s, ours_s, ours_slic_s, quantus_s = (best[k] for k in (
        "bound (forward passes)", "ours (segments given)", "ours (computing SLIC)", "quantus.IROF"))
    paired = np.array(times["bound (forward passes)"]) / np.array(times["ours (segments given)"])
    vs_quantus = np.array(times["quantus.IROF"]) / np.array(times["ours (segments given)"])

    # robust to load from other processes: within one call, the share spent in forward passes
    timer = ForwardTimer(model, args.device).eval()
    total = timed(lambda: irof(timer, x, attributions, target, segments=segments, batch_size=best_bs))

    for name, seconds in best.items():
        log(f"{name:26s}{args.samples / seconds:8.2f} samples/s")
    log(f"ours / bound              {np.median(paired):8.3f}   median of {len(paired)} paired rounds "
        f"(range {paired.min():.3f}-{paired.max():.3f}; best-of times: {bound_s / ours_s:.3f}), batch {best_bs}")
    log(f"ours / quantus            {np.median(vs_quantus):8.2f}x  median of paired rounds "
        f"(best-of times: {quantus_s / ours_s:.2f}x; computing SLIC: {quantus_s / ours_slic_s:.2f}x)")
    log(f"ours: share of its time in forward passes {timer.seconds / total:.3f}")
    return {"ours_over_bound": float(np.median(paired)), "ours_over_quantus": float(np.median(vs_quantus)),
            "forward_share": timer.seconds / total, "passes": passes, "batch_size": best_bs}


if __name__ == "__main__":
    main()
