"""How fast do the DALI loaders turn shards into batches? Samples/s against three baselines.

In one run, on the same shards, for each stream:

- DALI CPU pipeline (``--threads`` threads): train transforms ``random`` (a fixed-size crop
  anywhere + flip, no resize) and ``random_resized`` (crop window resized to the input size +
  flip), and the eval transform (centre crop);
- (a) the reference reader (tar + PIL + numpy, eval transform) in a ``--workers`` DataLoader;
- (b) the layout of common two-stream repositories: one JPEG file per RGB frame and 20 per
  flow stack on disk, PIL + the same train transforms in torchvision (RandomCrop or
  RandomResizedCrop, flip) in a ``--workers`` DataLoader;
- (c) the bound: plain PIL JPEG decoding of the same bytes in a tight loop on ``--threads``
  threads (nothing else: no reading, conversion, copy, cropping, normalising or batching).

Goals (issue 3): DALI temporal train ≥ 3× (b), spatial ≥ 1.5× (b), both ≥ 80 % of (c).
``--busy N`` adds the contention case (issue 20): DALI train ``random`` timed as the machine
is and beside N ``while True: pass`` processes, with this process's CPU seconds per 1,000
samples (threads that spin while they wait would burn more of them beside the busy loops);
a fair share on 2 cores beside 2 busy loops costs about 2x, goal <= 2.5x.
On the CPU the resize dominates ``random_resized`` (DALI's CPU resize is slow on 20 planes);
on a GPU it is cheap.
Each contender is timed over ``--epochs`` consecutive epochs (its first batch, start-up and
prefetch, not timed) once per round; the best of ``--rounds`` rounds is kept.

    python -m benchmarks.loader                       # synthetic 320×240 shards, built once under runs/
    python -m benchmarks.loader --shards runs/exp/shards/split1/train --rounds 1
    python -m benchmarks.loader --busy 2 --rounds 1 --only-contention   # the contention case alone
"""
from __future__ import annotations

import argparse
import gc
import io
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2
from tqdm import tqdm

from core.cli import HelpFormatter
from shards.dali import IMAGENET_MEAN, IMAGENET_STD, STREAMS, LoaderConfig, make_loader, shard_paths
from shards.format import CHANNELS, decode_sample, encode_jpeg
from shards.reference import reference_loader
from shards.tarfiles import iter_shard

DEFAULT_ROOT = Path("runs/bench-loader")
TRAIN_MODES = ("random", "random_resized")
SYNTHETIC = dict(classes=8, groups=4, clips=2, frames=48, width=320, height=240)  # UCF101's size


def synthetic_shards(root: Path) -> list[Path]:
    """Build (or reuse) synthetic 320×240 shards with the project's own ingest (train + test)."""
    from ingest.build_shards import build_shards
    from ingest.synthetic import generate
    videos = generate(root / "videos", **SYNTHETIC)
    build_shards(videos, videos / "ucfTrainTestlist", 1, root / "split1", clips_per_video=5,
                 test_clips=5, workers=2)
    return shard_paths(root / "split1" / "train") + shard_paths(root / "split1" / "test")


def export_frames(paths: list[Path], out: Path) -> list[tuple[Path, int]]:
    """One folder per sample: rgb.jpg (the shard's bytes) and 20 flow JPEGs (x_00.. then y_00..);
    returns (folder, label) pairs, the list file such repositories keep."""
    done = out / "done.json"
    sources = [str(p.resolve()) for p in paths]
    if done.is_file() and json.loads(done.read_text())["shards"] == sources:
        return [(out / key, label) for key, label in json.loads(done.read_text())["samples"]]
    samples = []
    for path in tqdm(paths, desc="per-frame JPEG files", unit="shard"):
        for raw in iter_shard(path):
            sample = decode_sample(raw, source=str(path))
            folder = out / sample.key
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "rgb.jpg").write_bytes(raw["rgb.jpg"])
            for c, plane in enumerate(sample.flow_q):
                name = f"{'xy'[c // 10]}_{c % 10:02d}.jpg"
                (folder / name).write_bytes(encode_jpeg(plane, quality=95))
            samples.append((sample.key, sample.label))
    done.write_text(json.dumps({"shards": sources, "samples": samples}))
    return [(out / key, label) for key, label in samples]


class PerFrameFiles(Dataset):
    """Baseline (b): PIL opens each frame file, torchvision transforms (train), like common repos."""

    def __init__(self, samples: list[tuple[Path, int]], cfg: LoaderConfig):
        self.samples, self.cfg = samples, cfg
        if cfg.crop_mode == "random":
            self.crop = v2.RandomCrop(cfg.input_size)
        else:
            scale = (min(cfg.crop_scales) ** 2, max(cfg.crop_scales) ** 2)
            self.crop = v2.RandomResizedCrop(cfg.input_size, scale=scale, antialias=True)
        self.rgb = v2.Compose([self.crop, v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True),
                               v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        folder, label = self.samples[index]
        if self.cfg.stream == "spatial":
            x = self.rgb(v2.functional.pil_to_tensor(Image.open(folder / "rgb.jpg").convert("RGB")))
        else:
            planes = [np.asarray(Image.open(folder / f"{'xy'[c // 10]}_{c % 10:02d}.jpg").convert("L"))
                      for c in range(CHANNELS)]
            x = self.crop(torch.from_numpy(np.stack(planes))).float()
            x = (x - 127.5) * (self.cfg.flow_bound / 127.5)
            if random.random() < 0.5:
                x = x.flip(-1)
                x[: CHANNELS // 2] *= -1
        return {"x": x, "label": label}


def decode_rate(pool: ThreadPoolExecutor, encoded: list[bytes], mode: str) -> float:
    """Baseline (c): samples/s of PIL decoding alone over the same JPEG bytes (pass them
    ``--epochs`` times, as many as the loaders are timed on)."""
    def decode(data: bytes) -> tuple[int, int]:
        with Image.open(io.BytesIO(data)) as image:  # decoding only: no conversion, no copy
            if image.mode != mode:
                raise ValueError(f"expected a {mode} JPEG, got {image.mode}")
            image.load()
            return image.size
    start = time.perf_counter()
    for _ in pool.map(decode, encoded):
        pass
    return len(encoded) / (time.perf_counter() - start)


def epochs_rate(loader, epochs: int) -> float:
    """Samples/s over ``epochs`` consecutive epochs, as training reads them, not counting the
    first batch of the first (start-up, prefetch). One short epoch alone (320 samples here)
    is mostly the pipeline filling and draining at its ends."""
    samples, start = 0, None
    for _ in range(epochs):
        for batch in loader:
            if start is None:
                start = time.perf_counter()
                continue
            samples += len(batch["label"])
    return samples / (time.perf_counter() - start)


def measure_stream(stream: str, paths: list[Path], samples: list[tuple[Path, int]], args) -> dict:
    """Best of ``--rounds`` rounds, each timing every contender once in turn, so a change in
    the machine's load during the run does not favour whichever ran at a quiet moment."""
    common = dict(stream=stream, batch_size=args.batch_size, input_size=args.input_size,
                  threads=args.threads, device="cpu")
    eval_cfg = LoaderConfig(**common)
    # Factories: each contender is built, timed and dropped in turn, so no pipeline or worker
    # of another contender prefetches in the background while one is timed.
    loaders = {"DALI eval": lambda: make_loader(paths, eval_cfg),
               "(a) reference eval": lambda: reference_loader(paths, eval_cfg, workers=args.workers)}
    for mode in TRAIN_MODES:
        cfg = LoaderConfig(train=True, crop_mode=mode, **common)
        loaders[f"DALI train {mode}"] = lambda cfg=cfg: make_loader(paths, cfg)
        loaders[f"(b) per-frame train {mode}"] = lambda cfg=cfg: DataLoader(
            PerFrameFiles(samples, cfg), batch_size=args.batch_size, shuffle=True,
            num_workers=args.workers, persistent_workers=True)
    encoded = [raw[STREAMS[stream]] for p in paths for raw in iter_shard(p)]
    mode = "RGB" if stream == "spatial" else "L"
    best = dict.fromkeys([*loaders, "(c) decode bound"], 0.0)
    with ThreadPoolExecutor(args.threads) as pool:
        for _ in tqdm(range(args.rounds), desc=stream, unit="round"):
            for name, build in loaders.items():
                loader = build()
                best[name] = max(best[name], epochs_rate(loader, args.epochs))
                del loader
                gc.collect()
            best["(c) decode bound"] = max(best["(c) decode bound"], decode_rate(pool, encoded * args.epochs, mode))
    return best


def report(stream: str, rates: dict) -> str:
    goal = {"spatial": 1.5, "temporal": 3.0}[stream]
    lines = [f"{stream} (samples/s):"] + [f"  {name:<32} {rate:8.0f}" for name, rate in rates.items()]
    for mode in TRAIN_MODES:
        lines.append(f"  DALI train {mode} / (b) = {rates[f'DALI train {mode}'] / rates[f'(b) per-frame train {mode}']:.2f}x"
                     f" (goal >= {goal}x); / (c) = {rates[f'DALI train {mode}'] / rates['(c) decode bound']:.0%}"
                     f" (goal >= 80%)")
    lines.append(f"  DALI eval / (a) = {rates['DALI eval'] / rates['(a) reference eval']:.2f}x; "
                 f"/ (c) = {rates['DALI eval'] / rates['(c) decode bound']:.0%}")
    return "\n".join(lines)


def contention(stream: str, paths: list[Path], args) -> dict:
    """DALI train ``random`` samples/s (best of ``--rounds``) and CPU seconds per 1,000 samples,
    idle and beside ``--busy`` busy loops."""
    import os

    from benchmarks.contention import BusyLoops
    cfg = LoaderConfig(stream=stream, batch_size=args.batch_size, input_size=args.input_size,
                       threads=args.threads, device="cpu", train=True, crop_mode="random")
    found = {}
    for phase in ("idle", "busy"):
        load = os.getloadavg()
        best, cpu_per_k = 0.0, None
        with BusyLoops(args.busy if phase == "busy" else 0):
            for _ in range(args.rounds):
                loader = make_loader(paths, cfg)
                c = time.process_time()
                rate = epochs_rate(loader, args.epochs)
                cpu = time.process_time() - c
                samples = args.epochs * len(loader) * args.batch_size if hasattr(loader, "__len__") else None
                if rate > best:
                    best, cpu_per_k = rate, (1000 * cpu / samples if samples else None)
                del loader
                gc.collect()
        found[phase] = {"samples_per_s": best, "cpu_s_per_1000": cpu_per_k, "load": load}
    found["slowdown"] = found["idle"]["samples_per_s"] / found["busy"]["samples_per_s"]
    return found


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.loader", description=__doc__.split("\n")[0],
                                epilog="exit codes: 0 measured; "
                                       "1 a measurement failed (traceback); 2 bad command line",
                                formatter_class=HelpFormatter)
    p.add_argument("--shards", type=Path, default=None,
                   help="a split subset folder (default: synthetic 320x240 shards under --root)")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="where generated data is kept")
    p.add_argument("--streams", nargs="+", default=list(STREAMS), choices=list(STREAMS), help="streams measured")
    p.add_argument("--batch-size", type=int, default=32, help="samples per batch")
    p.add_argument("--input-size", type=int, default=224, help="crop side in pixels")
    p.add_argument("--threads", type=int, default=2, help="DALI threads and decode-bound threads")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the baselines")
    p.add_argument("--rounds", type=int, default=3, help="each contender is timed once per round; best kept")
    p.add_argument("--epochs", type=int, default=3, help="consecutive epochs timed per contender and round")
    p.add_argument("--busy", type=int, default=0,
                   help="also time DALI train random beside this many busy-loop processes (0: not)")
    p.add_argument("--only-contention", action="store_true", help="only the --busy case")
    args = p.parse_args(argv)
    paths = shard_paths(args.shards) if args.shards else synthetic_shards(args.root)
    samples = [] if args.only_contention else export_frames(paths, args.root / "frames")
    print(f"{len(samples)} samples in {len(paths)} shards, batch {args.batch_size}, "
          f"{args.input_size} px, {args.threads} DALI threads, {args.workers} DataLoader workers, "
          f"best of {args.rounds} rounds of {args.epochs} epochs, torch {torch.__version__}")
    for stream in args.streams:
        if not args.only_contention:
            print(report(stream, measure_stream(stream, paths, samples, args)), flush=True)
        if args.busy:
            c = contention(stream, paths, args)
            per_k = lambda x: f"{x:.2f}" if x is not None else "?"  # noqa: E731
            print(f"{stream} DALI train random, {args.threads} threads: {c['idle']['samples_per_s']:.0f} samples/s "
                  f"(load {c['idle']['load'][0]:.2f}), beside {args.busy} busy loops "
                  f"{c['busy']['samples_per_s']:.0f} (load {c['busy']['load'][0]:.2f}): {c['slowdown']:.2f}x "
                  f"(goal <= 2.5x); CPU s per 1,000 samples {per_k(c['idle']['cpu_s_per_1000'])} idle, "
                  f"{per_k(c['busy']['cpu_s_per_1000'])} beside them", flush=True)


if __name__ == "__main__":
    main()
