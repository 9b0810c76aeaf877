"""Videos + official split lists → WebDataset shards of RGB frames and flow stacks, on Ray.

``python -m ingest.build_shards --videos DIR --splits DIR --split N --out DIR`` writes
``OUT/{train,test}/shard-NNNNNN.tar`` (+ ``.idx``) and ``OUT/manifest.parquet``.

Videos are assigned to shards from the split list alone (list order, fixed videos per shard),
so every run makes the same shards. One call of a Ray actor (``ShardBuilder``, ``workers`` of
them, killed when done) builds one shard: it writes the tar (atomic,
with its DALI index) and then its manifest part ``OUT/.parts/<subset>-shard-NNNNNN.parquet``
(atomic). A shard whose part exists is finished and skipped on a rerun, so a run killed at any
moment and rerun ends with the same shards and manifest (all columns but ``seconds``).
A video that cannot be decoded is a ``failed`` manifest row with the decoder's error.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2  # noqa: F401 (loaded before pin_threads sizes its pool)
import pyarrow as pa
import pyarrow.parquet as pq

from shards.format import (DEFAULT_FLOW_BOUND, DEFAULT_TEST_CLIPS, FORMAT_VERSION, MANIFEST_NAME,
                           MANIFEST_SCHEMA)
from shards.lock import FolderLocked, folder_lock, unique_tmp, write_text_atomic
from shards.node import node_info
from shards.progress import progress as progress_bar
from shards.tarfiles import is_complete, shard_problem, write_shard
from shards.threads import local_ray_options, pin_threads

from .clips import clip_frames, needed_pairs, stream_video_samples
from .flow import BACKENDS, DIS_PRESETS, FlowUnavailable, get_backend
from .ucf101 import SUBSETS, VideoEntry, read_split

PARTS_DIRNAME = ".parts"
OPTIONS_NAME = "options.json"
SAMPLES_PER_SHARD = 1000  # bound on a shard's size (~100-200 MB at 320x240)
MIN_SHARDS = 8  # small sets still get several shards (parallel tasks, per-GPU sharding)
MAX_RETRIES = 3  # a shard whose builder process died is rebuilt by a new one, this often


@dataclass(frozen=True)
class Options:
    """Everything that decides the shards' bytes (a rerun must use the same)."""
    split: int
    flow: str = "dis"
    flow_bound: float = DEFAULT_FLOW_BOUND
    clips_per_video: int = 5
    train_spacing: str = "even"
    test_clips: int = DEFAULT_TEST_CLIPS
    short_side: int | None = None
    seed: int = 0
    flow_options: dict = field(default_factory=dict)

    def clips(self, subset: str) -> int:
        return self.clips_per_video if subset == "train" else self.test_clips


@dataclass(frozen=True)
class ShardJob:
    subset: str
    index: int
    entries: tuple[VideoEntry, ...]

    @property
    def name(self) -> str:
        return f"{self.subset}/shard-{self.index:06d}.tar"

    @property
    def part_name(self) -> str:
        return f"{self.subset}-shard-{self.index:06d}.parquet"


@dataclass
class Summary:
    ok: int
    failed: int
    shards: int
    samples: int
    out: Path
    failures: list[tuple[str, str]]  # (video path, error)

    def __str__(self) -> str:
        lines = [f"{self.ok} ok, {self.failed} failed, {self.samples} samples in {self.shards} "
                 f"shards under {self.out}"]
        if self.failures:
            lines.append(f"failed videos (status 'failed' in {self.out / MANIFEST_NAME}):")
            lines += [f"  {video}: {error}" for video, error in self.failures[:20]]
            if len(self.failures) > 20:
                lines.append(f"  ... and {len(self.failures) - 20} more")
        return "\n".join(lines)


def plan_shards(entries: list[VideoEntry], subset: str, clips: int,
                shard_videos: int | None = None) -> list[ShardJob]:
    """Consecutive runs of the list's videos, the same for every run of the same list."""
    if shard_videos is None:
        shard_videos = max(1, min(math.ceil(len(entries) / MIN_SHARDS), SAMPLES_PER_SHARD // clips))
    return [ShardJob(subset, i, tuple(entries[lo:lo + shard_videos]))
            for i, lo in enumerate(range(0, len(entries), shard_videos))]


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


def build_shard(job: ShardJob, videos: Path, out: Path, opts: Options) -> list[dict]:
    """Decode, flow and encode one shard's videos; write the tar and then the manifest part."""
    threads = pin_threads()  # the actor's CPUs (1): parallelism comes from the tasks
    backend = get_backend(opts.flow, **opts.flow_options)
    flow_row = {"flow_method": backend.name,  # and its effective settings (defaults filled in)
                "flow_options": json.dumps(getattr(backend, "options", {}), sort_keys=True)}
    samples, rows = [], []
    for entry in job.entries:
        start = time.perf_counter()
        try:
            plan = lambda n, entry=entry: clip_frames(  # noqa: E731 (clips depend on the frame count)
                n, opts.clips(job.subset), spacing="even" if job.subset == "test" else opts.train_spacing,
                seed=opts.seed, video_id=entry.video_id)
            video, frames, new = stream_video_samples(videos / entry.path, entry, plan, backend,
                                                      opts.flow_bound, short_side=opts.short_side,
                                                      threads=threads)
        except Exception as exc:  # a bad video is recorded, never stops the others
            rows.append(_row(entry, job, opts, status="failed", error=str(exc) or repr(exc),
                             seconds=time.perf_counter() - start, **flow_row))
            continue
        samples += new
        rows.append(_row(entry, job, opts, frames=len(video), fps=video.fps,
                         width=video.width, height=video.height, clips=len(new),
                         clamped=len(video) < len(frames[0]), shard=job.name,
                         seconds=time.perf_counter() - start, **flow_row))
    if samples:
        write_shard(out / job.name, samples)
    where = node_info()
    rows = [{**row, **where} for row in rows]
    _write_parquet(out / PARTS_DIRNAME / job.part_name, rows)
    return rows


def _write_parquet(path: Path, rows: list[dict]) -> None:
    """Atomic: a temporary name, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_tmp(path)
    try:
        pq.write_table(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _finished_rows(job: ShardJob, out: Path) -> list[dict] | None:
    part = out / PARTS_DIRNAME / job.part_name
    if not part.is_file():
        return None
    rows = pq.read_table(part).to_pylist()
    if any(r["status"] != "ok" for r in rows):
        return None  # retry failed videos on a rerun (a fixed or now readable file gets in)
    if rows and shard_problem(out / job.name):
        return None  # missing, unindexed, truncated or missing a component: rebuild it
    return rows


class OptionsChanged(ValueError):
    """The output folder was built with other options or inputs (the message names each)."""


def _fingerprint(videos: Path, splits: Path, split: int, jobs: list[ShardJob]) -> dict:
    """(size, mtime) of every input file, by path relative to its folder; None if missing."""
    def stat(path: Path):
        try:
            st = path.stat()
        except OSError:
            return None
        return [st.st_size, st.st_mtime_ns]
    lists = ["classInd.txt", *(f"{s}list0{split}.txt" for s in SUBSETS)]
    return ({f"splits/{name}": stat(Path(splits) / name) for name in lists}
            | {f"videos/{e.path}": stat(Path(videos) / e.path) for job in jobs for e in job.entries})


def _failed_inputs(out: Path) -> set[str]:
    """Inputs whose videos failed last time: they may change (fixed) without a refusal."""
    return {f"videos/{r['path']}" for part in (out / PARTS_DIRNAME).glob("*-shard-*.parquet")
            for r in pq.read_table(part, columns=["path", "status"]).to_pylist()
            if r["status"] != "ok"}


def _check_options(out: Path, record: dict, overwrite: bool) -> None:
    """Refuse to mix shards built with other options or from other inputs into one folder.

    ``record`` is the options plus ``inputs`` (the fingerprint). Under ``overwrite`` the old
    shards, parts and manifest are removed instead. Call with the folder's lock held.
    """
    path = out / PARTS_DIRNAME / OPTIONS_NAME
    if path.is_file() and not overwrite:
        found = json.loads(path.read_text())
        old_inputs, new_inputs = found.pop("inputs", {}), record["inputs"]
        wanted = {k: v for k, v in record.items() if k != "inputs"}
        diff = [f"  {k}: was {found.get(k)!r}, now {v!r}" for k, v in wanted.items()
                if found.get(k) != v]
        diff += [f"  {k}: was {found[k]!r}, now missing" for k in found if k not in wanted]
        changed = sorted(k for k in set(old_inputs) | set(new_inputs)
                         if old_inputs.get(k) != new_inputs.get(k)) if old_inputs else []
        changed = [k for k in changed if k not in _failed_inputs(out)]
        diff += [f"  input {k}: was (size, mtime_ns) {old_inputs.get(k)}, now {new_inputs.get(k)}"
                 for k in changed[:20]]
        if len(changed) > 20:
            diff.append(f"  ... and {len(changed) - 20} more changed inputs")
        if diff:
            raise OptionsChanged(f"{out} holds shards built with other options or inputs:\n"
                                 + "\n".join(diff)
                                 + "\nuse another --out, or --overwrite to rebuild it")
    elif path.is_file():  # overwrite: remove what the old build wrote
        for old in [*out.glob("*/shard-*.tar"), *out.glob("*/shard-*.idx"),
                    *(out / PARTS_DIRNAME).glob("*.parquet"), out / MANIFEST_NAME]:
            old.unlink(missing_ok=True)
    write_text_atomic(path, json.dumps(record, sort_keys=True))


# each ingest actor: CPUs only (decoding and flow on the CPU), spread over all nodes
INGEST_TASK = {"num_cpus": 1, "num_gpus": 0, "scheduling_strategy": "SPREAD"}


class ShardBuilder:
    """A Ray actor that builds shards (one ``build_shard`` call per job).

    Ingest runs in actors, not tasks, so that the sweep can end their processes with
    ``ray.kill`` (an immediate exit) when the data stage is done. Task workers would stay
    idle in Ray's pool until the train stage's trial actors need their CPUs; Ray then asks
    them to exit gracefully, and a worker that has run OpenCV, FFmpeg and Arrow code can abort
    in that shutdown (absl "Mutex corrupt", SIGABRT, "Fatal Python error: Aborted" in the demo
    log at the data → train handover): the process finalizes Python while Ray's C++ threads
    still run. A killed actor finalizes nothing.
    """

    def build(self, job: ShardJob, videos: Path, out: Path, opts: Options) -> list[dict]:
        return build_shard(job, videos, out, opts)


def _run_on_ray(jobs: list[ShardJob], videos: Path, out: Path, opts: Options, workers: int,
                address: str | None, bar) -> dict[str, list[dict]]:
    import ray

    started = not ray.is_initialized()
    if started:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                     **local_ray_options())  # workers at niceness 0, not Ray's 15
    builder = ray.remote(**INGEST_TASK, max_restarts=0)(ShardBuilder)
    actors = [builder.remote() for _ in range(min(workers, len(jobs)))]  # spread over all nodes
    results, waiting, running, failures = {}, list(jobs), {}, {}
    started_at, pairs = time.perf_counter(), 0
    try:
        idle = list(actors)
        while waiting or running:
            while waiting and idle:  # at most `workers` shards at once
                actor, job = idle.pop(), waiting.pop(0)
                running[actor.build.remote(job, videos, out, opts)] = (actor, job)
            [ref], _ = ray.wait(list(running), num_returns=1)
            actor, job = running.pop(ref)
            try:
                results[job.name] = ray.get(ref)
            except ray.exceptions.RayActorError:  # its process died (OOM, node lost): a new one retries
                failures[job.name] = failures.get(job.name, 0) + 1
                if failures[job.name] > MAX_RETRIES:
                    raise
                actors.append(actor := builder.remote())
                waiting.insert(0, job)
            else:
                pairs += sum(flow_pairs(row, opts) for row in results[job.name])
                bar.set_postfix_str(f"{pairs / (time.perf_counter() - started_at):.1f} pairs/s", refresh=False)
                bar.update(len(job.entries))  # videos done, videos/s and the ETA
            idle.append(actor)
    finally:
        for actor in actors:  # end their processes now, without a graceful shutdown (see ShardBuilder)
            ray.kill(actor, no_restart=True)
        if started:
            ray.shutdown()
    return results


def build_shards(videos, splits, split: int, out, *, flow: str = "dis", workers: int = 2,
                 clips_per_video: int = 5, test_clips: int = DEFAULT_TEST_CLIPS,
                 short_side: int | None = None, classes: list[str] | None = None,
                 allow_missing: bool = False, strict: bool = False, address: str | None = None,
                 shard_videos: int | None = None, flow_bound: float = DEFAULT_FLOW_BOUND,
                 train_spacing: str = "even", seed: int = 0, flow_options: dict | None = None,
                 progress: bool = True, overwrite: bool = False) -> Summary:
    """Build (or finish building) the shards and manifest of one split; see the module doc."""
    videos, out = Path(videos), Path(out)
    opts = Options(split=split, flow=flow, flow_bound=flow_bound, clips_per_video=clips_per_video,
                   train_spacing=train_spacing, test_clips=test_clips, short_side=short_side,
                   seed=seed, flow_options=dict(flow_options or {}))
    get_backend(flow, **opts.flow_options)  # fail now, not in every task, if it cannot run here
    jobs = []
    for subset in SUBSETS:
        entries = read_split(splits, split, subset, videos=videos, classes=classes,
                             allow_missing=allow_missing)
        jobs += plan_shards(entries, subset, opts.clips(subset), shard_videos)
    record = asdict(opts) | {"classes": sorted(classes) if classes else None,
                             "shard_videos": shard_videos,
                             "inputs": _fingerprint(videos, splits, split, jobs)}
    with folder_lock(out, what="ingest"):
        return _build_locked(jobs, videos, out, opts, record, workers, address, overwrite,
                             strict, split, progress)


def _build_locked(jobs, videos, out, opts, record, workers, address, overwrite, strict, split,
                  progress) -> Summary:
    _check_options(out, record, overwrite)
    for stale in [*out.glob("*/shard-*.tmp-*"), *out.glob(f"{PARTS_DIRNAME}/*.tmp-*")]:
        stale.unlink(missing_ok=True)  # left by a killed run: we hold the lock, so not a live one's
    finished = {job.name: _finished_rows(job, out) for job in jobs}
    todo = [job for job in jobs if finished[job.name] is None]
    with progress_bar(total=sum(len(j.entries) for j in jobs), unit="video", desc=f"split {split} shards",
                      disable=not progress) as bar:
        bar.update(sum(len(j.entries) for j in jobs if finished[j.name] is not None))
        if todo:
            finished.update(_run_on_ray(todo, videos, out, opts, workers, address, bar))
    rows = [row for job in jobs for row in finished[job.name]]
    _write_parquet(out / MANIFEST_NAME, rows)
    failures = [(r["path"], r["error"]) for r in rows if r["status"] != "ok"]
    summary = Summary(ok=len(rows) - len(failures), failed=len(failures),
                      shards=sum(is_complete(out / j.name) for j in jobs),
                      samples=sum(r["clips"] for r in rows), out=out, failures=failures)
    if strict and failures:
        raise IngestFailed(summary)
    return summary


class IngestFailed(RuntimeError):
    """Raised under ``strict`` when some videos failed (after the manifest is written)."""

    def __init__(self, summary: Summary):
        super().__init__(str(summary))
        self.summary = summary


def flow_options(flow: str, dis_preset: str | None, raft_weights: str | None) -> dict:
    """Backend options from the command line; an option for another backend is an error."""
    if dis_preset and flow != "dis" or raft_weights and not flow.startswith("raft"):
        raise SystemExit(f"--dis-preset is for --flow dis, --raft-weights for raft_*; got --flow {flow}")
    options = {"preset": dis_preset} if dis_preset else {}
    return options | ({"weights": str(Path(raft_weights).resolve())} if raft_weights else {})


def input_problem(videos: Path, splits: Path) -> str | None:
    """One line naming a missing or unreadable input folder, else None (checked before any work)."""
    for option, folder in (("--videos", videos), ("--splits", splits)):
        if not folder.exists():
            return f"{option} {folder}: no such folder"
        if not folder.is_dir():
            return f"{option} {folder}: not a folder"
        if not os.access(folder, os.R_OK | os.X_OK):
            return f"{option} {folder}: not readable (permission denied)"
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="crossroads-ingest", description=__doc__.split("\n")[0],
                                epilog="exit codes: 0 done; 1 videos failed (with --strict) or ingest failed; "
                                       "2 bad command line", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--videos", required=True, type=Path, help="folder of Class/v_*.avi")
    p.add_argument("--splits", required=True, type=Path, help="folder of classInd/trainlist/testlist")
    p.add_argument("--split", required=True, type=int, choices=(1, 2, 3))
    p.add_argument("--out", required=True, type=Path, help="the split's shard folder")
    p.add_argument("--flow", default="dis", choices=BACKENDS, help="optical-flow method")
    p.add_argument("--dis-preset", default=None, choices=sorted(DIS_PRESETS),
                   help="DIS speed/quality preset (default fast)")
    p.add_argument("--raft-weights", default=None, help="state_dict file for raft_small/raft_large")
    p.add_argument("--flow-bound", type=float, default=DEFAULT_FLOW_BOUND,
                   help="flow quantisation bound B in pixels (|flow| clipped to it)")
    p.add_argument("--workers", type=int, default=2, help="parallel shard tasks")
    p.add_argument("--address", default=None, help="Ray cluster address (default: a local Ray)")
    p.add_argument("--clips-per-video", type=int, default=5, help="clips per train video")
    p.add_argument("--test-clips", type=int, default=DEFAULT_TEST_CLIPS,
                   help="evenly spaced clips per test video")
    p.add_argument("--short-side", type=int, default=None, help="resize frames (default: source size)")
    p.add_argument("--classes", nargs="+", default=None, help="only these classes")
    p.add_argument("--shard-videos", type=int, default=None, help="videos per shard")
    p.add_argument("--allow-missing", action="store_true")
    p.add_argument("--strict", action="store_true", help="exit 1 if any video failed")
    p.add_argument("--overwrite", action="store_true",
                   help="rebuild an --out built with other options or inputs")
    a = p.parse_args(argv)
    problem = input_problem(a.videos, a.splits)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        summary = build_shards(a.videos, a.splits, a.split, a.out, flow=a.flow, workers=a.workers,
                               clips_per_video=a.clips_per_video, test_clips=a.test_clips,
                               short_side=a.short_side, classes=a.classes,
                               allow_missing=a.allow_missing, strict=a.strict, address=a.address,
                               shard_videos=a.shard_videos, flow_bound=a.flow_bound,
                               flow_options=flow_options(a.flow, a.dis_preset, a.raft_weights),
                               overwrite=a.overwrite)
    except (OptionsChanged, FolderLocked, FlowUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except IngestFailed as exc:
        print(exc, file=sys.stderr)
        return 1
    except OSError as exc:  # a split list or folder that vanished or cannot be read
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
