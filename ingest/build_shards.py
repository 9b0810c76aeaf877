"""Videos + official split lists → WebDataset shards of RGB frames and flow stacks, on Ray.

``python -m ingest.build_shards --videos DIR --splits DIR --split N --out DIR`` writes
``OUT/{train,test}/shard-NNNNNN.tar`` (+ ``.idx``) and ``OUT/manifest.parquet``.

Videos are assigned to shards from the split list and a seed alone: each subset's videos in
a permutation drawn from ``shard_seed`` (recorded in ``.parts/options.json``), cut into runs of
fixed length, so every run makes the same shards and a shard holds videos of many classes (the
official lists are sorted by class; cut in list order a train shard held one or two, and the
loader's shuffle buffer, a few shards wide, could not mix classes into a batch). Inside a shard
the samples follow a seeded order of their keys (``sample_order``), a video's clips spread out. One call of a Ray actor (``ShardBuilder``, ``workers`` of
them, killed when done) builds one shard: it writes the tar (atomic,
with its DALI index) and then its manifest part ``OUT/.parts/<subset>-shard-NNNNNN.parquet``
(atomic). A shard whose part exists is finished and skipped on a rerun, so a run killed at any
moment and rerun ends with the same shards and manifest (all columns but ``seconds``).
A video that cannot be decoded is a ``failed`` manifest row with the decoder's error.

A builder keeps each finished video of its shard in a spool folder
``OUT/.parts/<subset>-shard-NNNNNN.videos/`` (its samples, then its manifest row) until the
shard is written. When a builder's process dies (the OOM killer, a crash, ``kill -9``), a fresh
builder takes the shard over: the finished videos come from the spool, the video in progress is
tried once more, and if the worker dies on it again it becomes a ``failed`` row whose error says
so. A rerun retries the failed videos of a shard (``--retry-failed``, the default) and takes its
other videos' samples from the existing tar; ``--no-retry-failed`` keeps such shards as they are.
``--dry-run`` prints the work (videos, flow pairs, shards and bytes, the bytes measured on a few
videos ingested into a temporary folder) and writes nothing into ``--out``.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import re
import shlex
import shutil
import signal
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2  # noqa: F401 (loaded before pin_threads sizes its pool)
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shards.cli import HelpFormatter
from shards.diskspace import DiskFull, disk_full, free_bytes, is_disk_full, size_text
from shards.format import (DEFAULT_FLOW_BOUND, DEFAULT_TEST_CLIPS, FORMAT_VERSION, MANIFEST_NAME,
                           MANIFEST_SCHEMA, UCF101_SIZE, clip_bytes)
from shards.interrupt import as_interrupted, reclaim_signals, stop_on_signals
from shards.lock import FolderLocked, folder_lock, unique_tmp, write_text_atomic
from shards.node import node_info
from shards.progress import progress as progress_bar
from shards.tarfiles import is_complete, iter_shard, shard_problem, write_shard
from shards.threads import local_ray_options, pin_threads

from .clips import clip_frames, needed_pairs, stream_video_samples
from .flow import BACKENDS, DIS_PRESETS, FlowUnavailable, get_backend
from .ucf101 import SUBSETS, SplitListError, VideoEntry, read_split

PARTS_DIRNAME = ".parts"
OPTIONS_NAME = "options.json"
SAMPLES_PER_SHARD = 1000  # bound on a shard's size (~100-200 MB at 320x240)
MIN_SHARDS = 8  # small sets still get several shards (parallel tasks, per-GPU sharding)
MAX_RETRIES = 3  # a shard whose builder process died between videos is taken over by a new one, this often
PROGRESS_POLL_S = 2.0  # how often the driver counts the videos finished inside running shards
VIDEO_TRIES = 2  # a video whose builder process died is tried once more, in a fresh worker, then `failed`
SPOOL_SUFFIX = ".videos"  # .parts/<subset>-shard-NNNNNN.videos/: a shard's finished videos until it is written
# test hook: the worker that starts the video with this id kills itself with SIGKILL (kill -9,
# standing for the OOM killer); with KILL_ONCE_ENV=FILE only while FILE does not exist (it creates it)
KILL_VIDEO_ENV = "CROSSROADS_TEST_KILL_VIDEO"
KILL_ONCE_ENV = "CROSSROADS_TEST_KILL_ONCE"


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
    shard_seed: int = 0  # the permutation of each subset's videos over its shards (plan_shards)

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
                shard_videos: int | None = None, seed: int = 0) -> list[ShardJob]:
    """Consecutive runs of a seeded permutation of the list's videos: the same for every run of
    the same list and seed, and each shard a random draw of the subset's classes."""
    if shard_videos is None:
        shard_videos = max(1, min(math.ceil(len(entries) / MIN_SHARDS), SAMPLES_PER_SHARD // clips))
    order = np.random.default_rng([seed, SUBSETS.index(subset)]).permutation(len(entries))
    shuffled = [entries[i] for i in order]
    return [ShardJob(subset, i, tuple(shuffled[lo:lo + shard_videos]))
            for i, lo in enumerate(range(0, len(entries), shard_videos))]


def sample_order(samples: list[dict], seed: int) -> list[dict]:
    """A shard's samples in a seeded order of their keys, so a video's clips are spread over the
    shard (the loader's shuffle buffer then holds clips of more videos); the order depends on the
    keys alone, not on which samples came from a spool or an older tar."""
    return sorted(samples, key=lambda s: hashlib.sha256(f"{seed}/{s['__key__']}".encode()).digest())


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
        tmp = unique_tmp(spool / f"{i:04d}.tar")
        try:
            with tarfile.open(tmp, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                for sample in samples:
                    for ext, data in sample.items():
                        if not ext.startswith("__"):
                            info = tarfile.TarInfo(f"{sample['__key__']}.{ext}")
                            info.size = len(data)
                            tar.addfile(info, io.BytesIO(bytes(data)))
            os.replace(tmp, spool / f"{i:04d}.tar")
        finally:
            tmp.unlink(missing_ok=True)
    write_text_atomic(spool / f"{i:04d}.json", json.dumps(row))


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


def _kill_for_tests(entry: VideoEntry) -> None:
    """``kill -9`` of this worker at the start of the video named by ``$CROSSROADS_TEST_KILL_VIDEO``
    (a test's stand-in for the OOM killer); with ``$CROSSROADS_TEST_KILL_ONCE=FILE`` only once."""
    if os.environ.get(KILL_VIDEO_ENV) != entry.video_id:
        return
    if marker := os.environ.get(KILL_ONCE_ENV):
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    os.kill(os.getpid(), signal.SIGKILL)


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
            _kill_for_tests(entry)
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
    _write_parquet(out / PARTS_DIRNAME / job.part_name, rows)
    shutil.rmtree(spool, ignore_errors=True)
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


def _finished_rows(job: ShardJob, out: Path, retry_failed: bool = True) -> list[dict] | None:
    part = out / PARTS_DIRNAME / job.part_name
    if not part.is_file():
        return None
    rows = pq.read_table(part).to_pylist()
    if retry_failed and any(r["status"] != "ok" for r in rows):
        return None  # retry failed videos on a rerun (a fixed or now readable file gets in)
    if any(r["status"] == "ok" for r in rows) and shard_problem(out / job.name):
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


def _check_options(out: Path, record: dict, overwrite: bool, write: bool = True) -> None:
    """Refuse to mix shards built with other options or from other inputs into one folder.

    ``record`` is the options plus ``inputs`` (the fingerprint). Under ``overwrite`` the old
    shards, parts and manifest are removed instead. Call with the folder's lock held (or with
    ``write=False``: only the check, nothing removed or written).
    """
    path = out / PARTS_DIRNAME / OPTIONS_NAME
    if path.is_file() and not overwrite:
        found = json.loads(path.read_text())
        if "shard_seed" not in found:
            raise OptionsChanged(
                f"{out} holds shards built in list order (before shards held a seeded permutation of "
                f"their videos: a train shard of the class-sorted UCF101 lists holds one or two classes, "
                f"so training batches would too); rebuild it with --overwrite (the sweep: delete {out})")
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
    elif path.is_file() and write:  # overwrite: remove what the old build wrote
        for old in [*out.glob("*/shard-*.tar"), *out.glob("*/shard-*.idx"),
                    *(out / PARTS_DIRNAME).glob("*.parquet"), out / MANIFEST_NAME]:
            old.unlink(missing_ok=True)
    if write:
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

    def build(self, job: ShardJob, videos: Path, out: Path, opts: Options,
              dead: dict[str, str] | None = None) -> list[dict]:
        return build_shard(job, videos, out, opts, dead)


# what a builder whose process died raises in the driver (OOM killer, crash, kill -9, node lost)
def _worker_died_errors() -> tuple[type, ...]:
    import ray.exceptions as rex
    return tuple(getattr(rex, name) for name in ("RayActorError", "WorkerCrashedError", "OutOfMemoryError",
                                                 "NodeDiedError") if hasattr(rex, name))


def death_reason(exc: Exception) -> str:
    """What Ray says about a dead builder, in one line: pid, exit type and detail, OOM or signal."""
    import ray.exceptions as rex
    text = " ".join(str(exc).split())
    facts = [f"{label}{m[1]}" for label, pattern in (("pid ", r"\bpid[:=] ?(\d+)"),
                                                     ("exit type ", r"Worker exit type: (\S+)"),
                                                     ("", r"Worker exit detail: (.*?)\.(?: |$)"))
             if (m := re.search(pattern, text))]
    if isinstance(exc, getattr(rex, "OutOfMemoryError", ())) or re.search(r"memory pressure|low on memory", text):
        facts.append("Ray's memory monitor killed it (the node ran low on memory)")
    elif "OOM killer" in text:
        facts.append("killed by a signal (SIGKILL: the OOM killer, kill -9) or crashed (SIGSEGV); "
                     "Ray cannot tell which")
    return f"{type(exc).__name__}: " + ("; ".join(facts) or text[:300])


def _spool_rows(job: ShardJob, out: Path, seen: set[str]) -> list[dict]:
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


def _run_on_ray(jobs: list[ShardJob], videos: Path, out: Path, opts: Options, workers: int,
                address: str | None, bar, done_before: dict[str, set[str]] | None = None
                ) -> dict[str, list[dict]]:
    import ray

    started = not ray.is_initialized()
    if started:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                     **local_ray_options())  # workers at niceness 0, not Ray's 15
        reclaim_signals()  # ray.init's SIGTERM handler exits 15 at once; ours stops the ingest cleanly
    builder = ray.remote(**INGEST_TASK, max_restarts=0)(ShardBuilder)
    actors = [builder.remote() for _ in range(min(workers, len(jobs)))]  # spread over all nodes
    results, waiting, running, failures = {}, list(jobs), {}, {}
    deaths: dict[str, int] = {}  # video path -> builder processes that died on it
    dead: dict[str, dict[str, str]] = {}  # shard -> {video id: error} of videos that died twice
    started_at, pairs, failed = time.perf_counter(), 0, 0
    bar.start_t = bar.last_print_t = time.time()  # tqdm's clock (time.time): rates and ETA without Ray's start-up
    # progress per video: rows in the running shards' spools, then the finished shard's rows;
    # videos kept from before this run are in the bar's start and in no rate
    counted = {(name, video) for name, kept in (done_before or {}).items() for video in kept}
    seen: dict[str, set[str]] = {}

    def count(job: ShardJob, rows: list[dict]) -> None:
        nonlocal pairs, failed
        new = [r for r in rows if (job.name, r["video"]) not in counted]
        counted.update((job.name, r["video"]) for r in new)
        pairs += sum(flow_pairs(r, opts) for r in new)
        failed += sum(r["status"] != "ok" for r in new)
        if new:
            bar.set_postfix_str(f"{pairs / (time.perf_counter() - started_at):.1f} pairs/s"
                                + (f", {failed} failed" if failed else ""), refresh=False)
            bar.update(len(new))  # videos done, videos/s and the ETA

    try:
        idle = list(actors)
        while waiting or running:
            while waiting and idle:  # at most `workers` shards at once
                actor, job = idle.pop(), waiting.pop(0)
                running[actor.build.remote(job, videos, out, opts, dead.get(job.name))] = (actor, job)
            ready, _ = ray.wait(list(running), num_returns=1, timeout=PROGRESS_POLL_S)
            if not ready:
                for _, job in running.values():
                    count(job, _spool_rows(job, out, seen.setdefault(job.name, set())))
                continue
            ref = ready[0]
            actor, job = running.pop(ref)
            try:
                results[job.name] = ray.get(ref)
            except _worker_died_errors() as exc:  # its process died (OOM, crash, node lost): a new one goes on
                video = in_progress(job, out)
                if video is None:  # between videos (writing the shard, starting up)
                    failures[job.name] = failures.get(job.name, 0) + 1
                    if failures[job.name] > MAX_RETRIES:
                        raise
                    what = "retrying the shard"
                else:
                    deaths[video.path] = deaths.get(video.path, 0) + 1
                    what = "retrying it in a fresh worker"
                    if deaths[video.path] >= VIDEO_TRIES:
                        dead.setdefault(job.name, {})[video.video_id] = (
                            f"the ingest worker process died while processing this video, "
                            f"{deaths[video.path]} times (a retry in a fresh worker included): "
                            f"{death_reason(exc)}")
                        what = "recording it as failed"
                print(f"ingest: the worker building {job.name} died"
                      + (f" on {video.path}" if video else "") + f" ({death_reason(exc)}); {what}",
                      file=sys.stderr, flush=True)
                ray.kill(actor, no_restart=True)
                actors.append(actor := builder.remote())
                waiting.insert(0, job)
            else:
                count(job, results[job.name])
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
                 progress: bool = True, overwrite: bool = False, retry_failed: bool = True,
                 shard_seed: int = 0) -> Summary:
    """Build (or finish building) the shards and manifest of one split; see the module doc.

    ``retry_failed``: a rerun rebuilds shards with failed videos, redoing only those videos."""
    videos, out = Path(videos), Path(out)
    opts = Options(split=split, flow=flow, flow_bound=flow_bound, clips_per_video=clips_per_video,
                   train_spacing=train_spacing, test_clips=test_clips, short_side=short_side,
                   seed=seed, flow_options=dict(flow_options or {}), shard_seed=shard_seed)
    get_backend(flow, **opts.flow_options)  # fail now, not in every task, if it cannot run here
    jobs = []
    for subset in SUBSETS:
        entries = read_split(splits, split, subset, videos=videos, classes=classes,
                             allow_missing=allow_missing)
        jobs += plan_shards(entries, subset, opts.clips(subset), shard_videos, opts.shard_seed)
    record = asdict(opts) | {"classes": sorted(classes) if classes else None,
                             "shard_videos": shard_videos,
                             "inputs": _fingerprint(videos, splits, split, jobs)}
    needed = planned_bytes(jobs, opts)
    if free_bytes(out) < needed:  # an estimate: say so, and let the run find out
        print(f"ingest: warning: {out} has {size_text(free_bytes(out))} free; these shards need about "
              f"{size_text(needed)} (finished shards included)", file=sys.stderr, flush=True)
    try:
        with folder_lock(out, what="ingest"):
            return _build_locked(jobs, videos, out, opts, record, workers, address, overwrite,
                                 strict, split, progress, retry_failed)
    except KeyboardInterrupt as exc:  # Ctrl-C / SIGTERM: main says what finished and how to continue
        stopped = as_interrupted(exc)
        stopped.finished = f"{sum(is_complete(out / j.name) for j in jobs)} of {len(jobs)} shards finished"
        raise stopped from None
    except Exception as exc:
        if is_disk_full(exc) and not isinstance(exc, DiskFull):  # also inside a Ray worker
            raise disk_full(out, needed=needed, what="the plan (all shards of this split)") from exc
        raise


def planned_bytes(jobs: list[ShardJob], opts: Options) -> int:
    """About how many bytes the shards of ``jobs`` take (``--dry-run`` measures it)."""
    per_clip = clip_bytes(*UCF101_SIZE, opts.short_side)  # UCF101's frame size: an estimate for messages
    return int(sum(len(job.entries) * opts.clips(job.subset) for job in jobs) * per_clip)


def _build_locked(jobs, videos, out, opts, record, workers, address, overwrite, strict, split,
                  progress, retry_failed=True) -> Summary:
    _check_options(out, record, overwrite)
    for stale in [*out.glob("*/shard-*.tmp-*"), *out.glob(f"{PARTS_DIRNAME}/*.tmp-*")]:
        stale.unlink(missing_ok=True)  # left by a killed run: we hold the lock, so not a live one's
    for spool in (out / PARTS_DIRNAME).glob(f"*{SPOOL_SUFFIX}"):
        shutil.rmtree(spool, ignore_errors=True)  # a killed run's unfinished shards: redone whole
    finished = {job.name: _finished_rows(job, out, retry_failed) for job in jobs}
    todo = [job for job in jobs if finished[job.name] is None]
    kept = {job.name: set(kept_rows(job, out)) for job in todo}  # ok videos of shards retrying failed ones
    with progress_bar(total=sum(len(j.entries) for j in jobs), unit="video", desc=f"split {split} shards",
                      initial=sum(len(j.entries) for j in jobs if finished[j.name] is not None)
                      + sum(map(len, kept.values())),
                      disable=not progress) as bar:  # initial: videos done before count in no rate
        if todo:
            finished.update(_run_on_ray(todo, videos, out, opts, workers, address, bar, kept))
    rows = [row for job in jobs for row in finished[job.name]]
    _write_parquet(out / MANIFEST_NAME, rows)
    failures = [(r["path"], r["error"]) for r in rows if r["status"] != "ok"]
    summary = Summary(ok=len(rows) - len(failures), failed=len(failures),
                      shards=sum(is_complete(out / j.name) for j in jobs),
                      samples=sum(r["clips"] for r in rows), out=out, failures=failures)
    if strict and failures:
        raise IngestFailed(summary)
    return summary


DRY_RUN_SAMPLE = 3  # videos the dry run ingests (into a temporary folder) to measure bytes per clip
DRY_RUN_PROBE = 200  # videos per subset whose frame counts the dry run reads (evenly spaced)


def probe_frames(path: Path) -> int | None:
    """The frame count a video's container declares (or duration × rate); None if unreadable."""
    import av
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            duration = stream.duration * stream.time_base if stream.duration else (
                container.duration / av.time_base if container.duration else 0)
            rate = stream.average_rate or stream.guessed_rate or 0
            return int(round(float(duration * rate))) or None
    except (av.FFmpegError, OSError, ValueError, IndexError):
        return None


def _spread(items: list, n: int) -> list:
    """``n`` items evenly spaced over the list (all of them if it is not longer)."""
    if len(items) <= n:
        return list(items)
    return [items[round(i * (len(items) - 1) / (n - 1))] if n > 1 else items[len(items) // 2]
            for i in range(n)]


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1024


def _duration(seconds: float) -> str:
    return (f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200
            else f"{seconds / 3600:.1f} h")


def dry_run(videos, splits, split: int, out, *, flow: str = "dis", clips_per_video: int = 5,
            test_clips: int = DEFAULT_TEST_CLIPS, short_side: int | None = None,
            classes: list[str] | None = None, allow_missing: bool = False,
            shard_videos: int | None = None, flow_bound: float = DEFAULT_FLOW_BOUND,
            train_spacing: str = "even", seed: int = 0, flow_options: dict | None = None,
            retry_failed: bool = True, workers: int = 2, overwrite: bool = False, sample: int = DRY_RUN_SAMPLE,
            probe: int = DRY_RUN_PROBE, shard_seed: int = 0) -> tuple[str, str | None]:
    """The work an ingest would do, as text: videos, expected flow pairs (from the frame counts of
    up to ``probe`` videos per subset), shards, and bytes (measured on ``sample`` videos ingested
    into a temporary folder, then extrapolated); and why a run would stop (``out`` holds shards of
    other options or inputs), else None. Writes nothing into ``out``, takes no lock."""
    videos, out = Path(videos), Path(out)
    opts = Options(split=split, flow=flow, flow_bound=flow_bound, clips_per_video=clips_per_video,
                   train_spacing=train_spacing, test_clips=test_clips, short_side=short_side,
                   seed=seed, flow_options=dict(flow_options or {}), shard_seed=shard_seed)
    get_backend(flow, **opts.flow_options)
    entries = {subset: read_split(splits, split, subset, videos=videos, classes=classes,
                                  allow_missing=allow_missing) for subset in SUBSETS}
    jobs = {subset: plan_shards(entries[subset], subset, opts.clips(subset), shard_videos, opts.shard_seed)
            for subset in SUBSETS}
    n_videos = sum(len(e) for e in entries.values())
    lines = [f"dry run: nothing is written to {out}",
             f"videos: {n_videos} ({', '.join(f'{len(entries[s])} {s}' for s in SUBSETS)})",
             f"shards: {sum(len(j) for j in jobs.values())} "
             f"({', '.join(f'{len(jobs[s])} {s}' for s in SUBSETS)}), at most "
             f"{max((len(j.entries) for js in jobs.values() for j in js), default=0)} videos each"]
    record = asdict(opts) | {"classes": sorted(classes) if classes else None, "shard_videos": shard_videos,
                             "inputs": _fingerprint(videos, splits, split, [j for js in jobs.values() for j in js])}
    try:
        _check_options(out, record, overwrite, write=False)
        problem = None
    except OptionsChanged as exc:
        problem = str(exc)
    if overwrite and (out / PARTS_DIRNAME / OPTIONS_NAME).is_file():
        lines.append(f"--overwrite: the shards already in {out} would be removed and rebuilt")
    elif (out / PARTS_DIRNAME).is_dir() and not problem:
        done = [j for js in jobs.values() for j in js if _finished_rows(j, out, retry_failed) is not None]
        retried = sum(r["status"] != "ok" for js in jobs.values() for j in js if j not in done
                      for r in (pq.read_table(out / PARTS_DIRNAME / j.part_name).to_pylist()
                                if (out / PARTS_DIRNAME / j.part_name).is_file() else []))
        lines.append(f"already in {out}: {len(done)} finished shards (skipped)"
                     + (f"; {retried} failed videos would be retried" if retried else ""))
    pairs, clips, probed, unreadable = 0.0, 0, [], 0
    for subset in SUBSETS:
        spacing = "even" if subset == "test" else opts.train_spacing
        picked = _spread(entries[subset], probe)
        counts = [(e, probe_frames(videos / e.path)) for e in picked]
        readable = [(e, n) for e, n in counts if n]
        unreadable += len(counts) - len(readable)
        if readable:
            per_video = [len(needed_pairs(clip_frames(n, opts.clips(subset), spacing=spacing, seed=opts.seed,
                                                      video_id=e.video_id))) for e, n in readable]
            pairs += sum(per_video) / len(per_video) * len(entries[subset])
        clips += opts.clips(subset) * len(entries[subset])
        probed.append(f"{len(readable)} of {len(entries[subset])} {subset}")
    exact = all(len(_spread(entries[s], probe)) == len(entries[s]) for s in SUBSETS) and not unreadable
    lines.append(f"expected flow pairs: {pairs:,.0f}{'' if exact else ' (estimated)'}, for {clips:,} clips "
                 f"({opts.clips_per_video} per train video, {opts.test_clips} per test video); frame counts "
                 f"read from {', '.join(probed)} videos" + (f", {unreadable} unreadable" if unreadable else ""))
    measured = [e for s in SUBSETS for e in _spread(entries[s], 1)]
    measured += [e for e in _spread([e for s in SUBSETS for e in entries[s]], sample) if e not in measured]
    measured = measured[:sample]
    with tempfile.TemporaryDirectory(prefix="crossroads-dry-run-") as tmp:
        tmp, n_clips, n_bytes, n_pairs, seconds, n_failed = Path(tmp), 0, 0, 0, 0.0, 0
        for i, entry in enumerate(measured):
            subset = "test" if entry in entries["test"] else "train"
            job = ShardJob(subset, i, (entry,))
            rows = build_shard(job, videos, tmp, opts)
            n_failed += sum(r["status"] != "ok" for r in rows)
            if (tmp / job.name).is_file():
                n_bytes += (tmp / job.name).stat().st_size + (tmp / job.name).with_suffix(".idx").stat().st_size
                n_clips += sum(r["clips"] for r in rows)
                n_pairs += sum(flow_pairs(r, opts) for r in rows)
                seconds += sum(r["seconds"] or 0 for r in rows)
    if n_clips:
        per_clip = n_bytes / n_clips
        lines.append(f"estimated bytes: {_size(per_clip * clips)} ({_size(per_clip)} per clip, measured on "
                     f"{len(measured) - n_failed} sample videos ingested into a temporary folder"
                     + (f"; {n_failed} failed" if n_failed else "") + ")")
        cpu_s = pairs * seconds / max(n_pairs, 1)
        lines.append(f"estimated time: {_duration(cpu_s)} of one CPU, {_duration(cpu_s / max(workers, 1))} "
                     f"with {workers} workers ({n_pairs / seconds if seconds else 0:.0f} pairs/s per CPU "
                     "in the sample; Ray's start-up not included)")
    else:
        lines.append(f"estimated bytes: unknown (none of the {len(measured)} sample videos could be ingested)")
    return "\n".join(lines), problem


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
                                epilog="exit codes: 0 done; 1 videos failed (with --strict) or ingest failed (a full disk: the folder, its free space, the space needed); 130 stopped by Ctrl-C, 143 by SIGTERM (finished shards kept; the same command continues; a second Ctrl-C exits at once); "
                                       "2 bad command line", formatter_class=HelpFormatter)
    p.add_argument("--videos", required=True, type=Path, help="folder of Class/v_*.avi")
    p.add_argument("--splits", required=True, type=Path, help="folder of classInd/trainlist/testlist")
    p.add_argument("--split", required=True, type=int, choices=(1, 2, 3), help="the split whose lists are read")
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
    p.add_argument("--shard-seed", type=int, default=0,
                   help="seed of the permutation of each subset's videos over its shards")
    p.add_argument("--allow-missing", action="store_true",
                   help="drop list entries whose video is absent (without it: an error naming the line)")
    p.add_argument("--strict", action="store_true", help="exit 1 if any video failed")
    p.add_argument("--overwrite", action="store_true",
                   help="rebuild an --out built with other options or inputs")
    p.add_argument("--retry-failed", action=argparse.BooleanOptionalAction, default=True,
                   help="a rerun retries the videos that failed (their shards' other videos are kept)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the work (videos, flow pairs, shards, bytes from a few sample videos) "
                        "and exit; nothing is written to --out")
    a = p.parse_args(argv)
    with stop_on_signals():
        try:
            return _main(a)
        except KeyboardInterrupt as exc:
            stopped = as_interrupted(exc)
            print(f"ingest stopped by {stopped.name}: {getattr(stopped, 'finished', 'no shard finished')} "
                  f"(kept); continue with: python -m ingest.build_shards "
                  f"{shlex.join(sys.argv[1:] if argv is None else argv)}", file=sys.stderr, flush=True)
            return stopped.exit_code


def _main(a: argparse.Namespace) -> int:
    problem = input_problem(a.videos, a.splits)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        if a.dry_run:
            text, problem = dry_run(a.videos, a.splits, a.split, a.out, flow=a.flow,
                          clips_per_video=a.clips_per_video, test_clips=a.test_clips,
                          short_side=a.short_side, classes=a.classes, allow_missing=a.allow_missing,
                          shard_videos=a.shard_videos, flow_bound=a.flow_bound,
                          flow_options=flow_options(a.flow, a.dis_preset, a.raft_weights),
                          retry_failed=a.retry_failed, workers=a.workers, overwrite=a.overwrite,
                          shard_seed=a.shard_seed)
            print(text)
            if problem:
                print(f"error: a run would stop: {problem}", file=sys.stderr)
            return 2 if problem else 0
        summary = build_shards(a.videos, a.splits, a.split, a.out, flow=a.flow, workers=a.workers,
                               clips_per_video=a.clips_per_video, test_clips=a.test_clips,
                               short_side=a.short_side, classes=a.classes,
                               allow_missing=a.allow_missing, strict=a.strict, address=a.address,
                               shard_videos=a.shard_videos, flow_bound=a.flow_bound,
                               flow_options=flow_options(a.flow, a.dis_preset, a.raft_weights),
                               overwrite=a.overwrite, retry_failed=a.retry_failed, shard_seed=a.shard_seed)
    except (OptionsChanged, FolderLocked, FlowUnavailable, SplitListError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except IngestFailed as exc:
        print(exc, file=sys.stderr)
        return 1
    except DiskFull as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a split list or folder that vanished or cannot be read
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
