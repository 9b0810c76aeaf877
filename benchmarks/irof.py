"""IROF throughput: quantus.IROF vs analysis.irof vs the bound (the forward passes alone).

One run, one model, the same inputs and SLIC segments for all three:

- quantus: ``quantus.IROF`` over the whole set as one batch (its fastest setting; it segments
  the inputs itself, as it always does),
- ours: ``analysis.irof.irof`` with the segments given, at the bound's best batch size
  (and once more computing SLIC itself),
- bound: only the ``n_segments + 1`` forward passes per sample that IROF needs, on
  preallocated inputs, at the best of several batch sizes.

    python benchmarks/irof.py --stream temporal --size 64 --samples 8
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torchvision

from analysis.irof import irof, quantus_irof, slic_segments


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


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bound_seconds(model, passes: int, shape: tuple, batch_size: int, device: str, repeats: int) -> float:
    """Time for ``passes`` forward passes alone at ``batch_size``."""
    x = torch.randn(batch_size, *shape, device=device)

    def run():
        with torch.inference_mode():
            for start in range(0, passes, batch_size):
                model(x[:min(batch_size, passes - start)])
        sync(device)

    run()  # warm-up
    return best_of(repeats, run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stream", choices=["spatial", "temporal"], default="temporal")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--classes", type=int, default=101)
    parser.add_argument("--batch-sizes", default="32,64,128,256")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    channels = 3 if args.stream == "spatial" else 20
    model = build_model(channels, args.classes, args.device)
    x = blocky_images(args.samples, channels, args.size)
    rng = np.random.default_rng(1)
    attributions = rng.random((args.samples, args.size, args.size)).astype(np.float32)
    target = rng.integers(0, args.classes, args.samples)
    segments = slic_segments(x)
    passes = int(sum(len(np.unique(s)) + 1 for s in segments))
    print(f"{args.stream} stream, {channels}x{args.size}x{args.size}, {args.samples} samples, "
          f"{passes} forward passes, device {args.device}, {torch.get_num_threads()} threads")

    bounds = {bs: bound_seconds(model, passes, x.shape[1:], bs, args.device, args.repeats)
              for bs in map(int, args.batch_sizes.split(","))}
    best_bs = min(bounds, key=bounds.get)
    for bs, seconds in bounds.items():
        print(f"  bound at batch {bs:4d}: {args.samples / seconds:8.2f} samples/s")

    def ours(given_segments):
        irof(model, x, attributions, target, segments=given_segments, batch_size=best_bs)
        sync(args.device)

    ours(segments)  # warm-up
    ours_s = best_of(args.repeats, lambda: ours(segments))
    ours_slic_s = best_of(args.repeats, lambda: ours(None))
    quantus_s = best_of(1, lambda: quantus_irof(model, x, attributions[:, None], target,
                                                batch_size=args.samples))
    bound_s = bounds[best_bs]

    for name, seconds in [("quantus.IROF", quantus_s), ("ours (segments given)", ours_s),
                          ("ours (computing SLIC)", ours_slic_s), ("bound (forward passes)", bound_s)]:
        print(f"{name:26s}{args.samples / seconds:8.2f} samples/s")
    print(f"ours / bound              {bound_s / ours_s:8.3f}")
    print(f"ours / quantus            {quantus_s / ours_s:8.2f}x  (with SLIC: {quantus_s / ours_slic_s:.2f}x)")


if __name__ == "__main__":
    main()
