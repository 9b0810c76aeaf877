"""Speed of the faithfulness metrics against Quantus 0.6, in one run (issue 30).

For 3- and 20-channel inputs (a random ResNet-18 of each stream, ``--size`` px, ``--clips`` clips
of smooth random images, vanilla-gradient maps), each metric is timed ours and, where Quantus has
it, Quantus' on the same inputs, maps and targets: IROF (Quantus' batch baseline), ROAD (Quantus
given the ranking in channel 0, see explanations.metrics.road) and the randomisation check (both at
Quantus' per-layer granularity, so both compute the same maps). Deletion and insertion have no
Quantus counterpart. Prints seconds per clip, the ratio (Quantus / ours: > 1 = ours faster) and
the share of the time spent in the model's forward passes (timed by hooks on the model).

    python -m benchmarks.explain_grid [--size 112] [--clips 2] [--channels 3 20] [--metrics ...]
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
import torchvision

from explanations.irof import irof, quantus_irof
from explanations.methods import explain
from explanations.metrics.deletion import deletion_insertion
from explanations.metrics.randomisation import randomisation
from explanations.metrics.road import road
from core.cli import HelpFormatter

METRICS = ("irof", "road", "deletion", "insertion", "randomisation", "randomisation_stage")


class ForwardTimer:
    """Seconds spent inside ``model.forward``: hooks on the top module. They are plain closures,
    so a deep copy of the model (the randomisation check's) still reports here."""

    def __init__(self, model: torch.nn.Module):
        self.seconds = 0.0
        started: list[float] = []

        def begin(*_):
            started.append(time.perf_counter())

        def end(*_):
            self.seconds += time.perf_counter() - started.pop()

        model.register_forward_pre_hook(begin)
        model.register_forward_hook(end)


def resnet(channels: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(num_classes=101)
    if channels != 3:
        model.conv1 = torch.nn.Conv2d(channels, 64, 7, 2, 3, bias=False)
    return model.eval()


def smooth_clips(n: int, channels: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=(n, channels, size // 8, size // 8))
    x = np.repeat(np.repeat(coarse, 8, axis=2), 8, axis=3) + 0.1 * rng.normal(size=(n, channels, size, size))
    return x.astype(np.float32)


def timed(timer: ForwardTimer, fn) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds of this process, forward share of the wall time) of ``fn()``."""
    timer.seconds = 0.0
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    seconds = time.perf_counter() - start
    return seconds, time.process_time() - cpu, timer.seconds / seconds


def vanilla(model, x, target):
    return explain("vanilla_gradient", model, torch.as_tensor(x), torch.as_tensor(target)).maps


def cases(metric: str, model, x: np.ndarray, maps: torch.Tensor, target: np.ndarray):
    """(ours, quantus or None) callables for one metric."""
    import quantus
    xt, tt = torch.from_numpy(x), torch.from_numpy(target)
    n, c, h, w = x.shape
    if metric == "irof":
        return (lambda: irof(model, xt, maps, tt, baseline="quantus"),
                lambda: quantus_irof(model, x, maps[:, None].numpy(), target, batch_size=n))
    if metric == "road":
        def quantus_road():
            a = maps.numpy()[:, None]
            ranked = np.concatenate([a, np.broadcast_to(a - a.max() - 1.0, (n, c - 1, h, w))], 1)
            m = quantus.ROAD(normalise=False, disable_warnings=True)
            m.a_size = h * w
            np.random.seed(0)
            return m(model=model, x_batch=x, y_batch=target, a_batch=ranked, channel_first=True,
                     device="cpu", batch_size=n)
        return lambda: road(model, x, maps, target, seed=0), quantus_road
    if metric in ("deletion", "insertion"):
        return lambda: deletion_insertion(model, xt, maps, tt, mode=metric), None

    def quantus_mprt():
        return quantus.MPRT(disable_warnings=True)(
            model=model, x_batch=x, y_batch=target, a_batch=maps[:, None].numpy(), channel_first=True,
            device="cpu", batch_size=n,
            explain_func=lambda model, inputs, targets, **kw: vanilla(model, inputs, targets)[:, None].numpy())
    if metric == "randomisation_stage":
        return lambda: randomisation(model, xt, tt, maps, vanilla, granularity="stage"), None
    return lambda: randomisation(model, xt, tt, maps, vanilla, granularity="module"), quantus_mprt


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.explain_grid", description=__doc__.splitlines()[0],
                                     epilog="exit codes: 0 measured; 1 a measurement failed (traceback); "
                                            "2 bad command line",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--size", type=int, default=112, help="input side in pixels")
    parser.add_argument("--clips", type=int, default=2, help="clips timed per metric")
    parser.add_argument("--channels", type=int, nargs="+", default=[3, 20],
                        help="input channels: 3 = the spatial stream, 20 = the temporal one")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's); 1 on a shared machine, where several threads "
                             "spin-wait for cores others hold and both clocks swing by 2-5x")
    parser.add_argument("--metrics", nargs="+", default=list(METRICS), choices=METRICS, help="the metrics timed")
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    print(f"# load {os.getloadavg()[0]:.1f}, torch threads {torch.get_num_threads()}, {args.clips} clips, "
          f"{args.size} px, ResNet-18, CPU")
    print("metric,channels,ours_s_per_clip,quantus_s_per_clip,ratio,ours_cpu_s_per_clip,quantus_cpu_s_per_clip,"
          "cpu_ratio,ours_forward_share,quantus_forward_share,load")
    streams = {}
    for channels in args.channels:
        model = resnet(channels)
        x = smooth_clips(args.clips, channels, args.size, seed=channels)
        target = np.arange(args.clips, dtype=np.int64)
        streams[channels] = model, ForwardTimer(model), x, target, vanilla(model, x, target)
    for metric in args.metrics:  # metric by metric, in the order given: a cut run keeps whole metrics
        for channels, (model, timer, x, target, maps) in streams.items():
            ours, reference = cases(metric, model, x, maps, target)
            ours_s, ours_cpu, ours_share = timed(timer, ours)
            ref_s, ref_cpu, ref_share = timed(timer, reference) if reference else (float("nan"),) * 3
            print(f"{metric},{channels},{ours_s / args.clips:.2f},{ref_s / args.clips:.2f},{ref_s / ours_s:.2f},"
                  f"{ours_cpu / args.clips:.2f},{ref_cpu / args.clips:.2f},{ref_cpu / ours_cpu:.2f},"
                  f"{ours_share:.2f},{ref_share:.2f},{os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
