"""IROF throughput: quantus.IROF vs explanations.irof vs the bound (the forward passes alone).

One run, one model (``--arch``, random weights, ``--stream``: 3 or 20 input channels), the same
inputs and SLIC segments for all three:

- quantus: ``quantus.IROF`` over the whole set as one batch (its fastest setting; it segments
  the inputs itself, as it always does),
- ours: ``explanations.irof.irof`` with the segments given and ``batch_size="auto"`` (its default),
  timed after the calibration has chosen the batch (the calls that calibrate are reported
  apart), and once more computing SLIC itself (unless ``--skip-slic``),
- bound: only the ``n_segments + 1`` forward passes per sample that IROF needs, on the very
  inputs IROF builds (recorded once, replayed), at the best of ``--batch-sizes``. The best is
  chosen by time per input on random inputs (one warm-up pass, then the best of two timings of
  at least ``--sweep-inputs`` inputs at each size); that sweep is printed, time per input
  against batch size.

Contenders are timed in interleaved rounds (order rotated every round); ``ours / bound`` is the
median of the per-round ratios, with their range, since CPU timings here vary by ~10-20 %
from one call to the next.

    python -m benchmarks.irof --stream temporal --size 64 --samples 8 --batch-sizes 128,256 --repeats 7
    python -m benchmarks.irof --arch resnet50 --stream spatial --size 224 --samples 4 --repeats 3
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
import torchvision

from explanations.irof import CPU_BATCH_MULTIPLE, auto_batch_sizes, calibration_key, irof, quantus_irof, slic_segments
from core.cli import RawHelpFormatter


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


ARCHS = ("resnet18", "resnet50")


def build_model(channels: int, classes: int, device: str, arch: str = "resnet18") -> torch.nn.Module:
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(num_classes=classes)
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


def time_per_input(model, shape: tuple, batch_size: int, inputs: int, device: str) -> float:
    """Seconds per input of forward passes alone at ``batch_size`` on random inputs: one warm-up
    pass, then the best of two timings of ``max(inputs, batch_size)`` inputs (whole batches)."""
    x = torch.randn(batch_size, *shape, device=device)
    passes = max(1, -(-inputs // batch_size))

    def run():
        with torch.inference_mode():
            for _ in range(passes):
                model(x)
        sync(device)

    with torch.inference_mode():
        model(x)
    return min(timed(run) for _ in range(2)) / (passes * batch_size)


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


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.irof", description=__doc__,
                                     epilog="exit codes: 0 measured; "
                                            "1 a measurement failed (traceback); 2 bad command line",
                                     formatter_class=RawHelpFormatter)
    parser.add_argument("--arch", choices=ARCHS, default="resnet18", help="the model (random weights)")
    parser.add_argument("--stream", choices=["spatial", "temporal"], default="temporal",
                        help="input kind: spatial 3 channels, temporal 20")
    parser.add_argument("--size", type=int, default=64, help="input height and width")
    parser.add_argument("--samples", type=int, default=8, help="inputs explained")
    parser.add_argument("--classes", type=int, default=101, help="model outputs")
    parser.add_argument("--batch-sizes", default="8,16,32,64,128,256", help="tried for the bound (comma-separated)")
    parser.add_argument("--sweep-inputs", type=int, default=64,
                        help="inputs per timing of each batch size in the bound's sweep (at least one batch)")
    parser.add_argument("--skip-slic", action="store_true", help="leave out the contender computing SLIC itself")
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
    model = build_model(channels, args.classes, args.device, args.arch)
    x = blocky_images(args.samples, channels, args.size)
    rng = np.random.default_rng(1)
    attributions = rng.random((args.samples, args.size, args.size)).astype(np.float32)
    target = rng.integers(0, args.classes, args.samples)
    segments = slic_segments(x)
    passes = int(sum(len(np.unique(s)) + 1 for s in segments))
    log(f"{args.arch} {args.stream} stream, {channels}x{args.size}x{args.size}, {args.samples} samples, "
        f"{passes} forward passes, device {args.device}, {torch.get_num_threads()} threads, "
        f"freed memory kept: {kept}, load average {load_average()}")

    per_input = {}
    for bs in map(int, args.batch_sizes.split(",")):
        per_input[bs] = time_per_input(model, x.shape[1:], bs, args.sweep_inputs, args.device)
        log(f"  forward passes alone at batch {bs:4d}: {per_input[bs] * 1e3:8.2f} ms per input")
    best_bs = min(per_input, key=per_input.get)

    def ours(given_segments):
        irof(model, x, attributions, target, segments=given_segments)
        sync(args.device)

    # The calibration of batch_size="auto": calls until it has chosen (it may span calls).
    key = calibration_key(model, x.shape[1:], np.dtype(np.float32), next(model.parameters()).device)
    calibrating = []
    while auto_batch_sizes().get(key) is None:
        calibrating.append(timed(lambda: ours(segments)))
    auto_bs = auto_batch_sizes()[key]
    log(f"  auto batch {auto_bs} (calibrated in {len(calibrating)} call(s): "
        f"{', '.join(f'{t:.2f}' for t in calibrating)} s), bound's best batch {best_bs}")

    def reference():
        quantus_irof(model, x, attributions[:, None], target, batch_size=args.samples)

    # The bound proper: the very inputs IROF feeds the model at that batch size, materialised
    # beforehand, so only the forward passes are timed.
    recorder = InputRecorder(model).eval()
    irof(recorder, x, attributions, target, segments=segments, batch_size=best_bs)
    recorded = sum(len(b) for b in recorder.batches)  # on a CPU batches are padded to 8s (explanations.irof)
    assert passes <= recorded < passes + CPU_BATCH_MULTIPLE * len(recorder.batches), (recorded, passes)

    # Interleaved rounds: each round times every contender once, in a rotated order. Per-round
    # ratios pair ours with the bound of the same round, so slow drifts (clock, memory, other
    # processes) cancel; the median over rounds and its range are reported.
    ours(segments)  # warm-up
    runs = {"quantus.IROF": reference, "ours (segments given)": lambda: ours(segments),
            "ours (computing SLIC)": lambda: ours(None),
            "bound (forward passes)": replay(model, recorder.batches, args.device)}
    if args.skip_slic:
        del runs["ours (computing SLIC)"]
    times = {name: [] for name in runs}
    for round_ in range(args.repeats):
        names = list(runs)
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            times[name].append(timed(runs[name]))
    best = {name: min(t) for name, t in times.items()}
    bound_s, ours_s, quantus_s = (best[k] for k in (
        "bound (forward passes)", "ours (segments given)", "quantus.IROF"))
    ours_slic_s = best.get("ours (computing SLIC)", float("nan"))
    paired = np.array(times["bound (forward passes)"]) / np.array(times["ours (segments given)"])
    vs_quantus = np.array(times["quantus.IROF"]) / np.array(times["ours (segments given)"])

    # robust to load from other processes: within one call, the share spent in forward passes
    timer = ForwardTimer(model, args.device).eval()
    total = timed(lambda: irof(timer, x, attributions, target, segments=segments, batch_size=auto_bs))

    for name, seconds in best.items():
        log(f"{name:26s}{args.samples / seconds:8.2f} samples/s")
    log(f"ours / bound              {np.median(paired):8.3f}   median of {len(paired)} paired rounds "
        f"(range {paired.min():.3f}-{paired.max():.3f}; best-of times: {bound_s / ours_s:.3f}), "
        f"ours at batch {auto_bs} (auto), bound at {best_bs}")
    log(f"ours / quantus            {np.median(vs_quantus):8.2f}x  median of paired rounds "
        f"(best-of times: {quantus_s / ours_s:.2f}x; computing SLIC: "
        f"{'skipped' if args.skip_slic else f'{quantus_s / ours_slic_s:.2f}x'})")
    log(f"ours: share of its time in forward passes {timer.seconds / total:.3f}; "
        f"vs quantus range {vs_quantus.min():.2f}-{vs_quantus.max():.2f}x; load average {load_average()}")
    return {"ours_over_bound": float(np.median(paired)), "ours_over_quantus": float(np.median(vs_quantus)),
            "forward_share": timer.seconds / total, "passes": passes, "batch_size": best_bs,
            "auto_batch_size": auto_bs, "ms_per_input": {bs: t * 1e3 for bs, t in per_input.items()}}


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main()
