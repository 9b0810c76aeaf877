"""What the sweep's ``data`` stage needs, checked before any stage starts (#25).

``check_data_stage(cfg)`` reads ``cfg.data`` and ``cfg.paths`` (as ``ingest.stage`` does) and
returns a ``DataCheck``: what it found (videos, classes, the shards' size estimate against the
free disk) and one message per problem — a split list that cannot be read, each listed video
that is missing (unless ``data.allow_missing``), too little free disk for the shards, a flow
backend that cannot run here (``tvl1`` without OpenCV's contrib build, ``raft_*`` without
weights), an output folder built in list order. Nothing is written, nothing is downloaded and
no video is decoded. ``pipeline.preflight`` calls it by name (training never imports ingest).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from shards.format import UCF101_SIZE, clip_bytes

from ingest.flow import unavailable
from ingest.ucf101 import SUBSETS, SplitListError, list_path, read_split

MISSING_SHOWN = 20  # missing videos named one a line; the rest counted


@dataclass
class DataCheck:
    train: int | None = None  # videos in the train list (after data.classes)
    test: int | None = None
    classes: int | None = None
    shard_bytes: float | None = None  # estimated bytes of the split's shards still to write
    free_bytes: int | None = None  # on the file system of the shards folder
    facts: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def shard_estimate(train: int, test: int, stored_clips: int, test_clips: int, width: int, height: int,
                   short_side: int | None) -> tuple[int, float]:
    """(clips, bytes) of a split's shards."""
    clips = train * stored_clips + test * test_clips
    return clips, clips * clip_bytes(width, height, short_side)


def size_text(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def _existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _synthetic_counts(data) -> tuple[int, int, int]:
    """(train, test, classes) videos of the synthetic set the data stage generates."""
    from ingest.synthetic import _arguments, specs_for, test_groups
    args = _arguments(**data.synthetic)
    names = [name for name, _, _ in specs_for(args["classes"], args["appearances"], args["design"],
                                              args.get("class_list"))]
    if data.classes is not None:
        names = [n for n in names if n in set(data.classes)]
    tested = len(test_groups(data.split, args["groups"]))
    per_group = len(names) * args["clips"]
    return per_group * (args["groups"] - tested), per_group * tested, len(names)


def _listed(data, check: DataCheck) -> tuple[int, int, int] | None:
    """(train, test, classes) from the split lists; each missing video a problem."""
    videos, splits = Path(data.videos), Path(data.splits)
    try:
        entries = {s: read_split(splits, data.split, s, classes=data.classes) for s in SUBSETS}
    except (SplitListError, OSError) as exc:
        check.problems.append(f"data.splits: {exc}")
        return None
    missing = [(s, e) for s in SUBSETS for e in entries[s] if not (videos / e.path).is_file()]
    if missing and data.allow_missing:
        check.facts.append(f"missing videos: {len(missing)} (data.allow_missing: the ingest records them failed)")
    elif missing:
        check.problems += [f"data.videos: {videos / e.path} not found (listed in {list_path(splits, s, data.split)})"
                           for s, e in missing[:MISSING_SHOWN]]
        if len(missing) > MISSING_SHOWN:
            check.problems.append(f"data.videos: ... and {len(missing) - MISSING_SHOWN} more listed videos not "
                                  f"found under {videos}")
        check.problems.append(f"data.videos: {len(missing)} listed videos are missing; restore them, or set "
                              f"data.allow_missing: true to ingest the others (the missing ones recorded failed)")
    labels = {e.label for s in SUBSETS for e in entries[s]}
    return len(entries["train"]), len(entries["test"]), len(labels)


def _written_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def check_data_stage(cfg) -> DataCheck:
    """Everything the data stage will need (see the module doc); writes and downloads nothing."""
    data, shards, check = cfg.data, cfg.paths.shards, DataCheck()
    options = {"preset": data.dis_preset} if data.dis_preset else {}
    if problem := unavailable(data.flow, **options):
        check.problems.append(f"data.flow: {problem}")
    if data.synthetic is not None:
        counts = _synthetic_counts(data)
        size = (data.synthetic.get("width", 320), data.synthetic.get("height", 240))
        check.facts.append("videos: synthetic, generated by the data stage")
    else:
        counts = _listed(data, check)
        size = UCF101_SIZE
    if counts is not None:
        check.train, check.test, check.classes = counts
        check.facts.append(f"videos: {check.train + check.test} ({check.train} train, {check.test} test), "
                           f"classes: {check.classes}")
        clips, total = shard_estimate(check.train, check.test, data.train_clips_stored or data.clips_per_video,
                                      data.test_clips, *size, data.short_side)
        written = _written_bytes(shards)
        check.shard_bytes = max(0.0, total - written)
        where = _existing(shards)
        check.free_bytes = shutil.disk_usage(where).free
        check.facts.append(
            f"shards: about {size_text(total)} ({clips:,} clips × {size_text(total / max(clips, 1))}, estimated "
            f"for {size[0]}×{size[1]} sources" + (f" at short side {data.short_side}" if data.short_side else "")
            + ")" + (f", {size_text(written)} already written" if written else "")
            + f"; {size_text(check.free_bytes)} free at {where}")
        if check.shard_bytes > check.free_bytes:
            check.problems.append(
                f"disk: the shards need about {size_text(check.shard_bytes)} more but {where} has "
                f"{size_text(check.free_bytes)} free; free space, move experiment.root, or store fewer or "
                f"smaller clips (data.train_clips_stored, data.test_clips, data.short_side)")
    recorded = shards / ".parts" / "options.json"
    if recorded.is_file() and "shard_seed" not in json.loads(recorded.read_text()):
        check.problems.append(f"data: {shards} holds shards built in list order (one or two classes a train "
                              f"shard); delete it so the data stage rebuilds it (crossroads-ingest --overwrite)")
    return check
