"""Inspect a split's shard folder: counts, sizes, decoded-sample checks and a contact sheet.

``python -m shards.inspect DIR [--sample N] [--out PNG]``: DIR is a split folder
(``train/``, ``test/``, ``manifest.parquet``). Every sample's metadata is read; every sample
(or ``N`` evenly chosen ones) is fully decoded and checked (components, shapes, label range
and class, frame indices, flow bound). The contact sheet shows one RGB frame per class beside
flow fields drawn in the usual HSV colour wheel (hue = direction, brightness = speed).
Exits 1 if any sample or shard is corrupt.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from core.cli import HelpFormatter
from shards.format import MANIFEST_NAME, STACK, DecodedSample, SampleMeta, ShardFormatError, decode_sample
from shards.tarfiles import is_complete, iter_shard, read_index, shard_problem

SUBSETS = ("train", "test")
SHEET_FIELDS = (0, STACK // 2, STACK - 1)  # which flow fields the contact sheet shows
TILE_HEIGHT = 96


@dataclass
class Report:
    samples: Counter = field(default_factory=Counter)  # (subset, class) -> samples
    bytes: Counter = field(default_factory=Counter)  # subset -> tar bytes
    shards: Counter = field(default_factory=Counter)
    decoded: int = 0
    errors: list[str] = field(default_factory=list)
    examples: dict = field(default_factory=dict)  # class -> DecodedSample for the sheet

    def text(self) -> str:
        lines = []
        for subset in SUBSETS:
            n = sum(v for (s, _), v in self.samples.items() if s == subset)
            if not n:
                continue
            lines.append(f"{subset}: {n} samples in {self.shards[subset]} shards, "
                         f"{self.bytes[subset] / n / 1024:.1f} KiB per sample")
            lines += [f"  {c}: {v}" for (s, c), v in sorted(self.samples.items()) if s == subset]
        lines.append(f"decoded and checked {self.decoded} samples; {len(self.errors)} problems")
        lines += [f"  {e}" for e in self.errors[:50]]
        return "\n".join(lines)


def _manifest_classes(split_dir: Path) -> dict[int, str] | None:
    path = split_dir / MANIFEST_NAME
    if not path.is_file():
        return None
    table = pq.read_table(path, columns=["label", "class_name", "status"]).to_pylist()
    return {r["label"]: r["class_name"] for r in table if r["status"] == "ok"}


def check_sample(sample: DecodedSample, classes: dict[int, str] | None, where: str) -> None:
    meta = sample.meta
    if classes is not None and classes.get(sample.label) != meta.class_name:
        raise ShardFormatError(f"{where}: label {sample.label} / class {meta.class_name!r} "
                               f"is not in the manifest's classes")
    if len(meta.frames) != STACK + 1 or meta.centre_frame != meta.frames[STACK // 2]:
        raise ShardFormatError(f"{where}: frame indices {meta.frames} / centre {meta.centre_frame}")
    if sample.rgb.ndim != 3 or sample.rgb.shape[2] != 3:
        raise ShardFormatError(f"{where}: rgb shape {sample.rgb.shape}")


def inspect_split(split_dir: Path, sample: int | None = None) -> Report:
    split_dir = Path(split_dir)
    report = Report()
    classes = _manifest_classes(split_dir)
    tars = [(s, t) for s in SUBSETS for t in sorted((split_dir / s).glob("shard-*.tar"))]
    if not tars:
        report.errors.append(f"{split_dir}: no shards in train/ or test/")
    total = sum(len(read_index(t)) for _, t in tars if is_complete(t))
    every = 1 if not sample else max(1, total // sample)
    seen = 0
    for subset, tar in tars:
        report.shards[subset] += 1
        report.bytes[subset] += tar.stat().st_size
        problem = shard_problem(tar)  # missing index, truncated tar, sample missing a component
        if problem:
            report.errors.append(problem)
            continue
        try:
            expected = len(read_index(tar))
            count = 0
            for raw in iter_shard(tar):
                count += 1
                where = f"{tar}: sample {raw['__key__']!r}"
                try:
                    meta = SampleMeta.from_json(raw["json"])
                    report.samples[(subset, meta.class_name)] += 1
                    if seen % every == 0 and (not sample or report.decoded < sample):
                        decoded = decode_sample(raw, source=str(tar))
                        check_sample(decoded, classes, where)
                        report.decoded += 1
                        report.examples.setdefault(meta.class_name, decoded)
                except (ShardFormatError, KeyError, ValueError) as exc:
                    report.errors.append(str(exc) if str(tar) in str(exc) else f"{where}: {exc}")
                seen += 1
            if count != expected:
                report.errors.append(f"{tar}: {count} samples but its index lists {expected}")
        except (ShardFormatError, OSError) as exc:
            report.errors.append(str(exc) if str(tar) in str(exc) else f"{tar}: {exc}")
    return report


def flow_to_rgb(u: np.ndarray, v: np.ndarray, max_speed: float) -> np.ndarray:
    """Colour-wheel rendering: hue = direction, value = speed / max_speed (clipped)."""
    speed, angle = cv2.cartToPolar(u.astype(np.float32), v.astype(np.float32), angleInDegrees=True)
    hsv = np.empty((*u.shape, 3), np.uint8)
    hsv[..., 0] = (angle / 2).astype(np.uint8)  # OpenCV hue is 0-179
    hsv[..., 1] = 255
    hsv[..., 2] = np.clip(speed / max(max_speed, 1e-6) * 255, 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def contact_sheet(examples: dict[str, DecodedSample]) -> np.ndarray:
    """One row per class: the RGB frame, then the SHEET_FIELDS flow fields."""
    flows = {c: s.flow for c, s in examples.items()}
    max_speed = max(float(np.percentile(np.hypot(f[:STACK], f[STACK:]), 99)) for f in flows.values())
    rows = []
    for name, sample in sorted(examples.items()):
        flow = flows[name]
        tiles = [sample.rgb] + [flow_to_rgb(flow[i], flow[STACK + i], max_speed) for i in SHEET_FIELDS]
        h, w = sample.rgb.shape[:2]
        size = (max(1, round(w * TILE_HEIGHT / h)), TILE_HEIGHT)
        row = np.concatenate([cv2.resize(t, size, interpolation=cv2.INTER_AREA) for t in tiles], 1)
        label = np.full((16, row.shape[1], 3), 255, np.uint8)
        cv2.putText(label, f"{name} ({sample.key})", (2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, 0, 1)
        rows.append(np.concatenate([label, row], 0))
    width = max(r.shape[1] for r in rows)
    return np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255)
                           for r in rows], 0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="crossroads-inspect-shards", description=__doc__.split("\n")[0],
                                epilog="exit codes: 0 shards read without errors; 1 some samples failed; "
                                       "2 bad command line", formatter_class=HelpFormatter)
    p.add_argument("dir", type=Path, help="a split folder (train/, test/, manifest.parquet)")
    p.add_argument("--sample", type=int, default=None, help="decode only N samples (default: all)")
    p.add_argument("--out", type=Path, default=None, help="contact sheet (default DIR/contact_sheet.png)")
    a = p.parse_args(argv)
    report = inspect_split(a.dir, a.sample)
    print(report.text())
    if report.examples:
        out = a.out or a.dir / "contact_sheet.png"
        Image.fromarray(contact_sheet(report.examples)).save(out)
        print(f"contact sheet: {out}")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
