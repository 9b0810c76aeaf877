"""Bytes per stored clip in a shard, for the RGB frame and the flow stack (the storage table of docs/parts.md, "Data").

``python -m benchmarks.shard_storage [--real DIR]``: encodes 5 evenly spaced clips of each of
8 synthetic 320×240 videos (and of the videos in ``--real``, if given) exactly as the ingest
does (DIS fast, bound 20) at several short sides, and prints the mean tar bytes per member
(512-byte header + data padded to 512) per clip.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from ingest.clips import clip_frames, video_samples
from ingest.decode import decode_video
from ingest.flow import get_backend
from ingest.synthetic import generate
from ingest.ucf101 import VideoEntry
from core.cli import HelpFormatter

SHORT_SIDES = (256, None, 64)
CLIPS = 5


def tar_bytes(n: int) -> int:
    return 512 + -(-n // 512) * 512


def measure(paths: list[Path], short_side: int | None) -> dict[str, float]:
    """Mean tar bytes per clip: rgb.jpg, flow.jpg, cls + json."""
    backend = get_backend("dis")
    entry = VideoEntry(path="X/v_X_g01_c01.avi", class_name="X", label=0, group=1, clip=1)
    sizes = {"rgb": [], "flow": [], "cls+json": []}
    for path in paths:
        video = decode_video(path, short_side=short_side, threads=1)
        for s in video_samples(video, entry, clip_frames(len(video), CLIPS), backend, 20.0):
            sizes["rgb"].append(tar_bytes(len(s["rgb.jpg"])))
            sizes["flow"].append(tar_bytes(len(s["flow.jpg"])))
            sizes["cls+json"].append(tar_bytes(len(s["cls"])) + tar_bytes(len(s["json"])))
    return {k: float(np.mean(v)) for k, v in sizes.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.shard_storage", description=__doc__.split("\n")[0],
                                epilog="exit codes: 0 measured; 1 a measurement failed (traceback); 2 bad command line",
                                formatter_class=HelpFormatter)
    p.add_argument("--real", type=Path, default=None, help="a folder of real videos to measure too")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = generate(Path(tmp) / "videos", classes=8, groups=3, clips=1, frames=48, width=320,
                        height=240, seed=0, progress=False)
        sets = {"synthetic 320x240": sorted(root.glob("*/*.avi"))[::3]}
        if a.real:
            sets[f"real ({a.real})"] = sorted(p for p in a.real.iterdir() if p.is_file())
        for name, paths in sets.items():
            for side in SHORT_SIDES:
                m = measure(paths, side)
                print(f"{name}, short side {side or 'source'}: " + ", ".join(
                    f"{k} {v / 1024:.1f} KiB" for k, v in m.items()) + f", all {sum(m.values()) / 1024:.1f} KiB/clip")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
