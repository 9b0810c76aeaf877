"""``--dry-run``: the work an ingest would do (videos, flow pairs, shards, bytes measured on a few
videos ingested into a temporary folder), and why a run would stop; writes nothing into ``--out``."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pyarrow.parquet as pq

from ingest.clips import clip_frames, needed_pairs
from ingest.ucf101 import SUBSETS

from ingest.shard_plan import OPTIONS_NAME, PARTS_DIRNAME, OptionsChanged, ShardJob, check_options, plan_ingest
from ingest.shard_worker import finished_rows, build_shard, flow_pairs


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


def dry_run(videos, splits, split: int, out, *, retry_failed: bool = True, workers: int = 2,
            overwrite: bool = False, sample: int = DRY_RUN_SAMPLE, probe: int = DRY_RUN_PROBE,
            **options) -> tuple[str, str | None]:
    """The work an ingest would do, as text: videos, expected flow pairs (from the frame counts of
    up to ``probe`` videos per subset), shards, and bytes (measured on ``sample`` videos ingested
    into a temporary folder, then extrapolated); and why a run would stop (``out`` holds shards of
    other options or inputs), else None. Writes nothing into ``out``, takes no lock."""
    videos, out = Path(videos), Path(out)
    plan = plan_ingest(videos, splits, split, **options)  # options: build_shards' (plan_ingest's)
    opts, entries, jobs = plan.opts, plan.entries, plan.jobs
    n_videos = sum(len(e) for e in entries.values())
    lines = [f"dry run: nothing is written to {out}",
             f"videos: {n_videos} ({', '.join(f'{len(entries[s])} {s}' for s in SUBSETS)})",
             f"shards: {sum(len(j) for j in jobs.values())} "
             f"({', '.join(f'{len(jobs[s])} {s}' for s in SUBSETS)}), at most "
             f"{max((len(j.entries) for js in jobs.values() for j in js), default=0)} videos each"]
    try:
        check_options(out, plan.record, overwrite, write=False)
        problem = None
    except OptionsChanged as exc:
        problem = str(exc)
    if overwrite and (out / PARTS_DIRNAME / OPTIONS_NAME).is_file():
        lines.append(f"--overwrite: the shards already in {out} would be removed and rebuilt")
    elif (out / PARTS_DIRNAME).is_dir() and not problem:
        done = [j for js in jobs.values() for j in js if finished_rows(j, out, retry_failed) is not None]
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
