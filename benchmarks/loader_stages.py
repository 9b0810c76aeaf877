"""Where a DALI CPU loader's time goes: the same pipeline cut after each stage, samples/s.

On the loader benchmark's shards, with the reader shuffling as in training, per stream, the
loader's own graph (train ``crop_mode="random"``) cut after: decoding the whole JPEG; decoding
only an input-size window (ROI: the crop's columns of the flow tile, as the loader does; for
RGB, which the loader decodes whole, the window itself); the full transform to float32; and,
for comparison, ``crop_mirror_normalize`` emitting uint8 (crop and mirror only) — next to (c),
plain PIL decoding of the same bytes. Each pipeline runs
``--batches`` batches after 3 untimed ones, ``--rounds`` times in turn; the best is kept.

    python -m benchmarks.loader_stages
"""
from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from nvidia.dali import fn, pipeline_def, types

from benchmarks.loader import DEFAULT_ROOT, decode_rate, synthetic_shards
from core.cli import HelpFormatter
from shards.dali import STREAMS, LoaderConfig, _decode, _train_transform
from shards.tarfiles import index_path, iter_shard

STAGES = ("decode", "decode ROI", "loader transform, float32", "crop + mirror only, uint8")


def stage_rate(paths: list[Path], stream: str, stage: str, size: int, batch: int, threads: int,
               batches: int) -> float:
    """The loader's own graph (``shards.dali``), cut after ``stage``."""
    cfg = LoaderConfig(stream=stream, train=True, crop_mode="random", input_size=size, batch_size=batch,
                       threads=threads, device="cpu")

    @pipeline_def(batch_size=batch, num_threads=threads, device_id=None, prefetch_queue_depth=2, seed=0)
    def pipe():
        encoded = fn.readers.webdataset(paths=[str(p) for p in paths], index_paths=[str(index_path(p)) for p in paths],
                                        ext=[STREAMS[stream]], random_shuffle=True, initial_fill=1024)
        crop_pos_x = fn.random.uniform(range=[0.0, 1.0])
        if stage == "decode":
            return _decode(encoded, cfg, False)[0]
        if stage == "decode ROI" and stream == "spatial":  # the loader decodes RGB whole
            return fn.decoders.image_crop(encoded, output_type=types.RGB, crop=(size, size),
                                          crop_pos_x=crop_pos_x, crop_pos_y=fn.random.uniform(range=[0.0, 1.0]))
        image, height, width = _decode(encoded, cfg, False, crop_pos_x if stream == "temporal" else None)
        if stage == "decode ROI":
            return image
        if stage == "crop + mirror only, uint8":
            return fn.crop_mirror_normalize(image, dtype=types.UINT8, crop=(size, size), crop_pos_x=crop_pos_x,
                                            crop_pos_y=fn.random.uniform(range=[0.0, 1.0]),
                                            mirror=fn.random.coin_flip(), output_layout="CHW")
        return _train_transform(image, cfg, height, width, crop_pos_x)

    p = pipe()
    p.build()
    for _ in range(3):
        p.run()
    start = time.perf_counter()
    for _ in range(batches):
        p.run()
    return batches * batch / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.loader_stages", description=__doc__.split("\n")[0],
                                epilog="exit codes: 0 measured; "
                                       "1 a measurement failed (traceback); 2 bad command line",
                                formatter_class=HelpFormatter)
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="where the loader benchmark keeps its data")
    p.add_argument("--streams", nargs="+", default=list(STREAMS), choices=list(STREAMS), help="streams measured")
    p.add_argument("--input-size", type=int, default=224, help="crop side in pixels")
    p.add_argument("--batch-size", type=int, default=32, help="samples per batch")
    p.add_argument("--threads", type=int, default=2, help="DALI threads and PIL decode threads")
    p.add_argument("--batches", type=int, default=40, help="timed batches per pipeline")
    p.add_argument("--rounds", type=int, default=3, help="each pipeline is timed once per round; best kept")
    a = p.parse_args(argv)
    paths = synthetic_shards(a.root)
    print(f"{len(paths)} shards, batch {a.batch_size}, {a.input_size} px, {a.threads} threads, "
          f"best of {a.rounds} rounds of {a.batches} batches (samples/s)")
    for stream in a.streams:
        encoded = [raw[STREAMS[stream]] for path in paths for raw in iter_shard(path)]
        best = dict.fromkeys([*STAGES, "(c) PIL decode only"], 0.0)
        with ThreadPoolExecutor(a.threads) as pool:
            for _ in range(a.rounds):
                for stage in STAGES:
                    best[stage] = max(best[stage], stage_rate(paths, stream, stage, a.input_size, a.batch_size,
                                                              a.threads, a.batches))
                best["(c) PIL decode only"] = max(best["(c) PIL decode only"], decode_rate(
                    pool, encoded * 3, "L" if stream == "temporal" else "RGB"))
        print(f"{stream}:")
        for name, rate in best.items():
            print(f"  {name:<26} {rate:7.0f}")


if __name__ == "__main__":
    main()
