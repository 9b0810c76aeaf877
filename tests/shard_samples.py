"""Shards written directly (no ingest) for loader tests: samples with known labels and content,
and the sizes of a tiny synthetic set for data-stage tests."""
from __future__ import annotations

import numpy as np

from shards.format import STACK, SampleMeta, encode_sample, tile_flow
from shards.tarfiles import write_shard

# a synthetic set small enough for a data stage in seconds
TINY = dict(classes=2, groups=3, clips=1, frames=12, width=64, height=48)


CLASSES = 3


def make_sample(video: str, clip: int, rgb: np.ndarray, flow: np.ndarray, **meta_overrides) -> dict:
    h, w = rgb.shape[:2]
    meta = SampleMeta(video=video, clip=clip, label=int(video[-1]) % CLASSES, class_name="test",
                      frames=list(range(STACK + 1)), centre_frame=STACK // 2, fps=25.0, width=w,
                      height=h, flow_method="test", **meta_overrides)
    bound = meta.flow_bound
    return encode_sample(rgb, tile_flow(flow, bound), meta)


def write_shards(folder, shards: int, videos: int, clips: int, make_content, **meta_overrides):
    """shards × videos × clips samples; video ids 'v<shard><video>' so the label is knowable."""
    for s in range(shards):
        samples = [make_sample(f"v{s}{v}", c, *make_content(), **meta_overrides)
                   for v in range(videos) for c in range(clips)]
        write_shard(folder / f"shard-{s:06d}.tar", samples)
    return folder


def noise(h: int, w: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    def content():
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        return rgb, rng.uniform(-25, 25, (STACK, h, w, 2)).astype(np.float32)
    return content


def ingest_args(videos, out, options: list[str]) -> list[str]:
    """``ingest.build_shards``' command line: ``videos`` with their own split lists, into ``out``."""
    return ["--videos", str(videos), "--splits", str(videos / "ucfTrainTestlist"), "--out", str(out), *options]
