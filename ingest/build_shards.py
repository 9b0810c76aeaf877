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
import os
import shlex
import shutil
import sys
from pathlib import Path

from core.cli import HelpFormatter
from core.diskspace import DiskFull, disk_full, free_bytes, is_disk_full, size_text
from core.interrupt import as_interrupted, stop_on_signals
from core.lock import FolderLocked, folder_lock
from core.progress import progress as progress_bar
from ingest.dry_run import dry_run
from ingest.flow import BACKENDS, DIS_PRESETS, FlowUnavailable
from ingest.shard_plan import PARTS_DIRNAME, OptionsChanged, Summary, check_options, plan_ingest, planned_bytes
from ingest.shard_pool import run_on_ray
from ingest.shard_worker import SPOOL_SUFFIX, finished_rows, write_parquet, kept_rows
from ingest.ucf101 import SplitListError
from shards.format import DEFAULT_FLOW_BOUND, DEFAULT_TEST_CLIPS, MANIFEST_NAME
from shards.tarfiles import is_complete


def build_shards(videos, splits, split: int, out, *, workers: int = 2, strict: bool = False,
                 address: str | None = None, progress: bool = True, overwrite: bool = False,
                 retry_failed: bool = True, **options) -> Summary:
    """Build (or finish building) the shards and manifest of one split; see the module doc.
    ``options``: the ingest's options, as ``ingest.shard_plan.plan_ingest`` names them (flow,
    clips_per_video, test_clips, short_side, classes, shard_videos, …).

    ``retry_failed``: a rerun rebuilds shards with failed videos, redoing only those videos."""
    videos, out = Path(videos), Path(out)
    plan = plan_ingest(videos, splits, split, **options)
    opts, jobs, record = plan.opts, plan.all_jobs, plan.record
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


def _build_locked(jobs, videos, out, opts, record, workers, address, overwrite, strict, split,
                  progress, retry_failed=True) -> Summary:
    check_options(out, record, overwrite)
    for stale in [*out.glob("*/shard-*.tmp-*"), *out.glob(f"{PARTS_DIRNAME}/*.tmp-*")]:
        stale.unlink(missing_ok=True)  # left by a killed run: we hold the lock, so not a live one's
    for spool in (out / PARTS_DIRNAME).glob(f"*{SPOOL_SUFFIX}"):
        shutil.rmtree(spool, ignore_errors=True)  # a killed run's unfinished shards: redone whole
    finished = {job.name: finished_rows(job, out, retry_failed) for job in jobs}
    todo = [job for job in jobs if finished[job.name] is None]
    kept = {job.name: set(kept_rows(job, out)) for job in todo}  # ok videos of shards retrying failed ones
    with progress_bar(total=sum(len(j.entries) for j in jobs), unit="video", desc=f"split {split} shards",
                      initial=sum(len(j.entries) for j in jobs if finished[j.name] is not None)
                      + sum(map(len, kept.values())),
                      disable=not progress) as bar:  # initial: videos done before count in no rate
        if todo:
            finished.update(run_on_ray(todo, videos, out, opts, workers, address, bar, kept))
    rows = [row for job in jobs for row in finished[job.name]]
    write_parquet(out / MANIFEST_NAME, rows)
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
        options = dict(flow=a.flow, clips_per_video=a.clips_per_video, test_clips=a.test_clips,
                       short_side=a.short_side, classes=a.classes, allow_missing=a.allow_missing,
                       shard_videos=a.shard_videos, flow_bound=a.flow_bound, shard_seed=a.shard_seed,
                       flow_options=flow_options(a.flow, a.dis_preset, a.raft_weights))
        if a.dry_run:
            text, problem = dry_run(a.videos, a.splits, a.split, a.out, retry_failed=a.retry_failed,
                                    workers=a.workers, overwrite=a.overwrite, **options)
            print(text)
            if problem:
                print(f"error: a run would stop: {problem}", file=sys.stderr)
            return 2 if problem else 0
        summary = build_shards(a.videos, a.splits, a.split, a.out, workers=a.workers, strict=a.strict,
                               address=a.address, overwrite=a.overwrite, retry_failed=a.retry_failed,
                               **options)
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
