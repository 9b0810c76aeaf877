"""How fast is the ingest? Videos/s and frame pairs/s against a bound and a baseline, one run.

The three real clips of ../shared/data/real_videos (320x240, 340x256, 426x240), linked
``--repeat`` times each into a UCF101-style folder, all in the test list (25 evenly spaced
clips per video). The ingest computes each pair its clips need once (e.g. 250 of the 299
pairs of the 300-frame clip); the baseline computes every pair, so pairs/s is the fair speed
comparison. On ``--workers`` processes, with the same DIS preset and flow bound:

- ingest: ``build_shards`` on an already started local Ray (Ray's start-up is printed
  apart): decode, flow, JPEG encode, tar + index + manifest;
- bound: only the same flow calls, on grayscale frames already decoded in memory;
- baseline, laid out the way common two-stream repositories do it: decode to one JPEG file
  per frame in per-video folders, then read those files back and write one JPEG file per x
  and per y flow field (quantised with the same fixed bound).

Goals (issue 2): ingest >= 85 % of the bound, >= 1.5x the baseline, far fewer files, no more bytes.
Each is reported on wall time and on CPU seconds (all processes involved, Ray's included):
on a machine shared with other jobs, only the CPU figures are comparable between phases.

    python -m benchmarks.ingest                  # 70 copies of each clip: 210 videos
    python -m benchmarks.ingest --repeat 4 --short-side 128 --preset medium
    python -m benchmarks.ingest --clips ApplyEyeMakeup   # the real UCF101 clip (XviD) alone
    python -m benchmarks.ingest --profile --clips ApplyEyeMakeup --repeat 4   # where a shard's time goes
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np

from ingest.build_shards import build_shards
from ingest.clips import clip_frames
from ingest.decode import decode_video
from ingest.flow import DIS_PRESETS, get_backend
from shards.format import DEFAULT_FLOW_BOUND, DEFAULT_TEST_CLIPS, encode_jpeg, quantise_flow

REAL_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_videos"
CLIPS = {"ApplyEyeMakeup": "v_ApplyEyeMakeup_sample.avi", "ArmWrestling": "armwrestling_340x256.mp4",
         "Basketball": "basketball_426x240.mp4"}


def make_folder(root: Path, repeat: int, clips: list[str] | None = None) -> tuple[Path, Path, list[Path]]:
    """Symlinks ``Class/v_Class_gGG_cCC.avi`` → the real clips (all, or the classes named in
    ``clips``); lists with every video in test."""
    videos, lists = root / "videos", root / "lists"
    lists.mkdir(parents=True)
    paths, test = [], []
    for name, src in CLIPS.items():
        if clips and name not in clips:
            continue
        (videos / name).mkdir(parents=True)
        for i in range(repeat):
            rel = f"{name}/v_{name}_g{i // 7 + 1:02d}_c{i % 7 + 1:02d}.avi"
            (videos / rel).symlink_to(REAL_VIDEOS / src)
            paths.append(videos / rel)
            test.append(rel)
    crlf = lambda lines: "".join(line + "\r\n" for line in lines).encode()
    (lists / "classInd.txt").write_bytes(crlf(f"{i} {c}" for i, c in enumerate(CLIPS, 1)))
    (lists / "trainlist01.txt").write_bytes(b"")
    (lists / "testlist01.txt").write_bytes(crlf(test))
    return videos, lists, paths


def needed_pairs(n_frames: int) -> list[int]:
    clips = clip_frames(n_frames, DEFAULT_TEST_CLIPS)
    return sorted({a for c in clips for a, b in zip(c, c[1:]) if a != b})


# --- the bound: flow calls only, frames in memory (one copy per worker, decoded untimed) ---
_FRAMES: dict = {}
_PRESET = ["fast"]


def _load(paths: list[str], short_side: int | None, preset: str) -> None:
    cv2.setNumThreads(1)
    _PRESET[0] = preset
    for p in paths:
        _FRAMES[p] = decode_video(p, short_side=short_side).gray  # what the ingest's DIS compares


def _ready(_) -> int:
    time.sleep(0.2)
    return len(_FRAMES)


def _flow_only(path: str) -> int:
    frames = _FRAMES[path]
    starts = needed_pairs(len(frames))
    for _ in get_backend("dis", preset=_PRESET[0]).fields(frames, starts):
        pass
    return len(starts)


# --- the baseline: one JPEG file per frame, then one per x/y flow field ---
def _per_file(args: tuple[str, str, int | None, str]) -> int:
    src, out, short_side, preset = args
    cv2.setNumThreads(1)
    folder = Path(out)
    folder.mkdir(parents=True)
    frames = decode_video(src, short_side=short_side, threads=1).frames
    for i, frame in enumerate(frames, 1):
        (folder / f"img_{i:05d}.jpg").write_bytes(encode_jpeg(frame, 90))
    dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])
    prev = cv2.imread(str(folder / "img_00001.jpg"), cv2.IMREAD_GRAYSCALE)
    for i in range(2, len(frames) + 1):
        cur = cv2.imread(str(folder / f"img_{i:05d}.jpg"), cv2.IMREAD_GRAYSCALE)
        flow = dis.calc(prev, cur, None)
        for axis, name in ((0, "x"), (1, "y")):
            (folder / f"flow_{name}_{i - 1:05d}.jpg").write_bytes(
                encode_jpeg(quantise_flow(flow[..., axis], DEFAULT_FLOW_BOUND), 95))
        prev = cur
    return len(frames) - 1


def profile_shard(videos: Path, lists: Path, out: Path, short_side: int | None, preset: str) -> None:
    """cProfile of ``build_shard`` on all the videos in one shard, in this process (after an
    untimed warm-up pass); prints the functions that took the most time, as shares."""
    import cProfile
    import pstats

    from ingest.build_shards import Options, build_shard, plan_shards
    from ingest.ucf101 import read_split
    entries = read_split(lists, 1, "test", videos=videos)
    [job] = plan_shards(entries, "test", DEFAULT_TEST_CLIPS, shard_videos=len(entries))
    opts = Options(split=1, short_side=short_side, flow_options={"preset": preset})
    cv2.setNumThreads(1)
    build_shard(job, videos, out / "warm-up", opts)
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.runcall(build_shard, job, videos, out / "profiled", opts)
    total = time.perf_counter() - start
    print(f"build_shard of {len(entries)} videos in one process: {total:.2f} s "
          f"({total / len(entries) * 1e3:.0f} ms per video); own time per function:")
    stats = pstats.Stats(profiler).stats  # {(file, line, name): (calls, _, own s, cumulative s, _)}
    for (file, line, name), (calls, _, own, _, _) in sorted(stats.items(), key=lambda kv: -kv[1][2])[:10]:
        print(f"  {own / total:6.1%}  {own:6.2f} s  {calls:6d} calls  {name} ({Path(file).name}:{line})")


def tree_cpu_seconds() -> float:
    """User + system CPU seconds of this process's live descendants (and of the children they
    reaped), from Linux /proc. Unlike wall time, this barely moves when other jobs share the cores."""
    tick, parent, cpu = os.sysconf("SC_CLK_TCK"), {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended meanwhile
            parent[int(entry.name)] = int(fields[1])
            cpu[int(entry.name)] = sum(int(f) for f in fields[11:15]) / tick
    tree, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier} - tree
        tree |= frontier
    return sum(cpu[pid] for pid in tree)


def tree_size(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ingest", description=__doc__.split("\n")[0],
                                epilog="exit codes: 0 measured; "
                                       "1 a measurement failed (traceback); 2 bad command line",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--repeat", type=int, default=70, help="copies of each of the 3 clips")
    p.add_argument("--workers", type=int, default=2, help="Ray workers (processes)")
    p.add_argument("--short-side", type=int, default=None)
    p.add_argument("--preset", default="fast", choices=sorted(DIS_PRESETS), help="DIS preset")
    p.add_argument("--clips", nargs="+", choices=list(CLIPS), default=None,
                   help="only these clips (ApplyEyeMakeup is the real UCF101 one: XviD, 320x240)")
    p.add_argument("--profile", action="store_true",
                   help="only profile build_shard in one process (no Ray, bound or baseline)")
    p.add_argument("--keep", type=Path, default=None, help="work here and keep the outputs")
    a = p.parse_args(argv)
    import ray

    root = Path(a.keep or tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        videos, lists, paths = make_folder(root / "data", a.repeat, a.clips)
        if a.profile:
            return profile_shard(videos, lists, root, a.short_side, a.preset)
        sources = [src for name, src in CLIPS.items() if not a.clips or name in a.clips]
        n_frames = {src: len(decode_video(REAL_VIDEOS / src, short_side=a.short_side))
                    for src in sources}
        pairs = a.repeat * sum(len(needed_pairs(n)) for n in n_frames.values())
        n = len(paths)
        print(f"{n} videos ({a.repeat} x {list(n_frames.values())} frames), {pairs} frame pairs, "
              f"{a.workers} workers, DIS {a.preset}, short side {a.short_side or 'source'}")

        t = time.perf_counter()
        ray.init(num_cpus=a.workers, include_dashboard=False, log_to_driver=False)
        print(f"Ray start-up (not counted): {time.perf_counter() - t:.1f} s")
        try:
            t, c = time.perf_counter(), tree_cpu_seconds()
            summary = build_shards(videos, lists, 1, root / "shards", workers=a.workers,
                                   short_side=a.short_side, flow_options={"preset": a.preset},
                                   progress=False)
            ingest_s, ingest_cpu = time.perf_counter() - t, tree_cpu_seconds() - c
        finally:
            ray.shutdown()
        assert summary.failed == 0 and summary.ok == n, summary

        srcs = [str(REAL_VIDEOS / s) for s in sources]
        with Pool(a.workers, initializer=_load, initargs=(srcs, a.short_side, a.preset)) as pool:
            pool.map(_ready, range(4 * a.workers), chunksize=1)  # workers up, frames decoded
            t, c = time.perf_counter(), tree_cpu_seconds()
            assert sum(pool.map(_flow_only, [str(p.resolve()) for p in paths], chunksize=1)) == pairs
            bound_s, bound_cpu = time.perf_counter() - t, tree_cpu_seconds() - c

        base = root / "per_file"
        jobs = [(str(path), str(base / path.parent.name / path.stem), a.short_side, a.preset)
                for path in paths]
        with Pool(a.workers) as pool:
            t, c = time.perf_counter(), tree_cpu_seconds()
            base_pairs = sum(pool.map(_per_file, jobs, chunksize=1))
            base_s, base_cpu = time.perf_counter() - t, tree_cpu_seconds() - c

        shard_files, shard_bytes = tree_size(root / "shards")
        base_files, base_bytes = tree_size(base)
        rows = [("ingest (shards, Ray)", ingest_s, ingest_cpu, pairs),
                ("bound (flow only, in memory)", bound_s, bound_cpu, pairs),
                ("baseline (JPEG per frame/field)", base_s, base_cpu, base_pairs)]
        print(f"\n{'method':32s} {'wall s':>7s} {'videos/s':>8s} {'pairs/s':>7s} {'CPU s':>7s} "
              f"{'pairs/CPU s':>11s}")
        for name, s, cpu, k in rows:
            print(f"{name:32s} {s:7.1f} {n / s:8.2f} {k / s:7.0f} {cpu:7.1f} {k / cpu:11.0f}")
        print(f"\ningest / bound speed (pairs/s):    wall {bound_s / ingest_s:6.1%}, "
              f"CPU {bound_cpu / ingest_cpu:6.1%}  (goal >= 85 %)")
        print(f"ingest / baseline speed (pairs/s): wall {(pairs / ingest_s) / (base_pairs / base_s):5.2f}x, "
              f"CPU {(pairs / ingest_cpu) / (base_pairs / base_cpu):5.2f}x  (goal >= 1.5x)")
        print(f"files: shards {shard_files}, baseline {base_files} ({base_files / shard_files:.0f}x more)")
        print(f"bytes: shards {shard_bytes / 2**20:.1f} MiB, baseline {base_bytes / 2**20:.1f} MiB "
              f"(shards / baseline {shard_bytes / base_bytes:.2f})")
    finally:
        if a.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
