"""One shard, built in one process (``build_shard``): its videos decoded and their flow computed,
each finished video spooled (``.parts/<subset>-shard-NNNNNN.videos/``) so a builder that dies
is taken over without redoing them, then the tar (with its DALI index) and the manifest part
written atomically. ``finished_rows`` says whether a shard is done (its part exists)."""
from __future__ import annotations

import io
import json
import shutil
import tarfile
import time
from pathlib import Path

import cv2  # noqa: F401  (loaded before pin_threads sizes its pool)

import pyarrow as pa
import pyarrow.parquet as pq

from shards.format import FORMAT_VERSION, MANIFEST_SCHEMA
from core.atomic import atomic_file, write_text_atomic
from core.node import node_info
from shards.tarfiles import iter_shard, shard_problem, write_shard
from core.threads import pin_threads

from ingest.clips import clip_frames, needed_pairs, stream_video_samples
from ingest.flow import get_backend
from ingest.ucf101 import VideoEntry

from ingest.shard_plan import PARTS_DIRNAME, Options, ShardJob, sample_order


VIDEO_TRIES = 2  # a video whose builder process died is tried once more, in a fresh worker, then `failed`


SPOOL_SUFFIX = ".videos"  # .parts/<subset>-shard-NNNNNN.videos/: a shard's finished videos until it is written


def _row(entry: VideoEntry, job: ShardJob, opts: Options, **values) -> dict:
    row = dict(split=opts.split, subset=job.subset, video=entry.video_id, path=entry.path,
               class_name=entry.class_name, label=entry.label, group=entry.group, frames=None,
               fps=None, width=None, height=None, clips=0, clamped=None, shard=None,
               status="ok", error=None, flow_method=opts.flow, flow_options=None, flow_bound=opts.flow_bound,
               seconds=None, format_version=FORMAT_VERSION)
    row.update(values)
    return row


def flow_pairs(row: dict, opts: Options) -> int:
    """How many flow pairs the ingest computed for one manifest row (0 for a failed video)."""
    if row["status"] != "ok":
        return 0
    subset = row["subset"]
    clips = clip_frames(row["frames"], opts.clips(subset), spacing="even" if subset == "test" else opts.train_spacing,
                        seed=opts.seed, video_id=row["video"])
    return len(needed_pairs(clips))


def spool_dir(job: ShardJob, out: Path) -> Path:
    return out / PARTS_DIRNAME / (job.part_name.removesuffix(".parquet") + SPOOL_SUFFIX)


def _spool(spool: Path, i: int, row: dict, samples: list[dict]) -> None:
    """Keep one finished video: its samples (a plain tar, if any), then its row (the marker)."""
    if samples:
        with atomic_file(spool / f"{i:04d}.tar", durable=False) as tmp, \
                tarfile.open(tmp, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for sample in samples:
                for ext, data in sample.items():
                    if not ext.startswith("__"):
                        info = tarfile.TarInfo(f"{sample['__key__']}.{ext}")
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(bytes(data)))
    write_text_atomic(spool / f"{i:04d}.json", json.dumps(row), durable=False)  # redone if lost


def _spooled(spool: Path, i: int) -> tuple[dict, list[dict]] | None:
    """A video a builder of this shard finished before its process died, else None."""
    try:
        row = json.loads((spool / f"{i:04d}.json").read_text())
    except FileNotFoundError:
        return None
    samples = [{k: v for k, v in s.items() if k != "__shard__"}
               for s in iter_shard(spool / f"{i:04d}.tar")] if row["status"] == "ok" else []
    return row, samples


def in_progress(job: ShardJob, out: Path) -> VideoEntry | None:
    """The video a builder of ``job`` had started and not finished (after its process died)."""
    spool = spool_dir(job, out)
    started = [i for i, _ in enumerate(job.entries)
               if (spool / f"{i:04d}.started").exists() and not (spool / f"{i:04d}.json").exists()]
    return job.entries[started[-1]] if started else None


def kept_rows(job: ShardJob, out: Path) -> dict[str, dict]:
    """The ok rows of a finished shard being rebuilt to retry its failed videos, by video id
    (none if its tar is damaged: then all its videos are redone)."""
    part = out / PARTS_DIRNAME / job.part_name
    if not part.is_file() or shard_problem(out / job.name):
        return {}
    paths = {e.video_id: e.path for e in job.entries}
    return {r["video"]: r for r in pq.read_table(part).to_pylist()
            if r["status"] == "ok" and paths.get(r["video"]) == r["path"]}


def _kept(job: ShardJob, out: Path) -> dict[str, tuple[dict, list[dict]]]:
    """``kept_rows`` with each video's samples from the existing tar."""
    kept = {video: (row, []) for video, row in kept_rows(job, out).items()}
    for sample in iter_shard(out / job.name) if kept else ():
        video = sample["__key__"].rsplit("__", 1)[0]
        if video in kept:
            kept[video][1].append({k: v for k, v in sample.items() if k != "__shard__"})
    return kept


def build_shard(job: ShardJob, videos: Path, out: Path, opts: Options,
                dead: dict[str, str] | None = None) -> list[dict]:
    """Decode, flow and encode one shard's videos; write the tar and then the manifest part.

    Videos a builder of this shard finished before its process died come from the spool, the ok
    videos of an earlier build of it (being rebuilt to retry its failed ones) from its tar;
    ``dead`` ({video id: error}) names videos that killed their worker twice: ``failed`` rows.
    """
    threads = pin_threads()  # the actor's CPUs (1): parallelism comes from the tasks
    backend = get_backend(opts.flow, **opts.flow_options)
    flow_row = {"flow_method": backend.name,  # and its effective settings (defaults filled in)
                "flow_options": json.dumps(getattr(backend, "options", {}), sort_keys=True)}
    where = node_info()
    spool, kept, dead = spool_dir(job, out), _kept(job, out), dead or {}
    spool.mkdir(parents=True, exist_ok=True)
    samples, rows = [], []
    for i, entry in enumerate(job.entries):
        done = _spooled(spool, i) or kept.get(entry.video_id)
        if done:
            rows.append(done[0])
            samples += done[1]
            continue
        start, new = time.perf_counter(), []
        if entry.video_id in dead:
            row = _row(entry, job, opts, status="failed", error=dead[entry.video_id], **flow_row)
        else:
            (spool / f"{i:04d}.started").touch()
            try:
                plan = lambda n, entry=entry: clip_frames(  # noqa: E731 (clips depend on the frame count)
                    n, opts.clips(job.subset), spacing="even" if job.subset == "test" else opts.train_spacing,
                    seed=opts.seed, video_id=entry.video_id)
                video, frames, new = stream_video_samples(videos / entry.path, entry, plan, backend,
                                                          opts.flow_bound, short_side=opts.short_side,
                                                          threads=threads)
            except Exception as exc:  # a bad video is recorded, never stops the others
                row = _row(entry, job, opts, status="failed", error=str(exc) or repr(exc),
                           seconds=time.perf_counter() - start, **flow_row)
            else:
                row = _row(entry, job, opts, frames=len(video), fps=video.fps,
                           width=video.width, height=video.height, clips=len(new),
                           clamped=len(video) < len(frames[0]), shard=job.name,
                           seconds=time.perf_counter() - start, **flow_row)
        row = {**row, **where}
        _spool(spool, i, row, new)
        samples += new
        rows.append(row)
    if samples:
        write_shard(out / job.name, sample_order(samples, opts.shard_seed))
    else:  # every video failed: no tar (nor an index of an older one)
        for old in (out / job.name, (out / job.name).with_suffix(".idx")):
            old.unlink(missing_ok=True)
    write_parquet(out / PARTS_DIRNAME / job.part_name, rows)
    shutil.rmtree(spool, ignore_errors=True)
    return rows


def write_parquet(path: Path, rows: list[dict]) -> None:
    """The manifest (or a shard's part of it), written atomically."""
    with atomic_file(path) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), tmp)


def finished_rows(job: ShardJob, out: Path, retry_failed: bool = True) -> list[dict] | None:
    part = out / PARTS_DIRNAME / job.part_name
    if not part.is_file():
        return None
    rows = pq.read_table(part).to_pylist()
    if retry_failed and any(r["status"] != "ok" for r in rows):
        return None  # retry failed videos on a rerun (a fixed or now readable file gets in)
    if any(r["status"] == "ok" for r in rows) and shard_problem(out / job.name):
        return None  # missing, unindexed, truncated or missing a component: rebuild it
    return rows


def spool_rows(job: ShardJob, out: Path, seen: set[str]) -> list[dict]:
    """Rows of videos a builder of ``job`` finished since the last call (names kept in ``seen``)."""
    rows = []
    for path in sorted(spool_dir(job, out).glob("*.json")):
        if path.name not in seen:
            try:
                rows.append(json.loads(path.read_text()))
            except (OSError, ValueError):  # the shard finished meanwhile (spool removed)
                continue
            seen.add(path.name)
    return rows
