"""How fast is the ingest? Its overhead over a stage-sum bound, a baseline, scaling, memory, contention.

The three real clips of ../shared/data/real_videos (320x240, 340x256, 426x240), linked
``--repeat`` times each into a UCF101-style folder, all in the test list (25 evenly spaced
clips per video). The ingest computes each pair its clips need once (e.g. 250 of the 299
pairs of the 300-frame clip); the baseline computes every pair, so pairs/s is the fair speed
comparison. On ``--workers`` processes, with the same flow bound, for each DIS preset of
``--presets`` (the first one also gets the baseline, scaling and contention phases):

- ingest: ``build_shards`` on an already started local Ray (Ray's start-up is printed
  apart): decode, flow, JPEG encode, tar + index + manifest;
- stage-sum bound (issue 20): the same decode (every picture decoded, the luma of the clips'
  frames, the RGB of their centre frames), the same flow calls and the same JPEG encodes
  (``encode_sample`` of the same samples), each timed alone in one process (1 thread) on the
  same clips and summed; divided by the workers, the wall time an ingest with no overhead
  would need. Goal: ingest >= 90 % of its speed (``stage_sum_ratio``);
- flow-only bound (issue 2's, kept for comparison): the same flow calls on frames in memory;
- baseline, laid out the way common two-stream repositories do it: decode to one JPEG file
  per frame in per-video folders, then read those files back and write one JPEG file per x
  and per y flow field (quantised with the same fixed bound). Goal >= 1.5x (``baseline_speedup``);
- scaling: the same ingest with 1 worker; goal 2 workers >= 1.8x one (``worker_scaling``);
- memory: peak RSS of a fresh worker process that ingests one generated 720p video of
  ``--long-seconds`` (default 5 min) and one of ``--short-seconds`` (10 s): the same 10 s of
  MPEG-4 part 2 (UCF101's codec) at 25 fps, encoded once and repeated by remuxing its packets;
  goal long / short <= 1.25 (``rss_ratio``);
- contention: the ingest again beside two ``while True: pass`` processes this benchmark
  starts and stops; goal <= 2.5x the idle wall time (``contention_slowdown``).

Wall-time figures are also given on CPU seconds (all processes involved, Ray's included):
on a machine shared with other jobs, only the CPU figures are comparable between phases, and
scaling and contention numbers mean something only on an otherwise idle machine (the load
average is printed before each phase). ``--json FILE`` writes the goals' figures
(``stage_sum_ratio``, ``baseline_speedup``, ``worker_scaling``, ``rss_ratio``,
``contention_slowdown``) and the details as one JSON object.

    python -m benchmarks.ingest                  # 70 copies of each clip: 210 videos
    python -m benchmarks.ingest --quick --json /tmp/ingest.json   # a few minutes
    python -m benchmarks.ingest --repeat 4 --short-side 128 --presets medium
    python -m benchmarks.ingest --clips ApplyEyeMakeup   # the real UCF101 clip (XviD) alone
    python -m benchmarks.ingest --profile --clips ApplyEyeMakeup --repeat 4   # where a shard's time goes
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import multiprocessing
from pathlib import Path

import cv2
import numpy as np

from benchmarks.contention import BusyLoops
from benchmarks.ingest_probes import TreeCpu, load, measure_rss, tree_size
from ingest.build_shards import build_shards
from ingest.clips import clip_frames, tile_quantised
from ingest.decode import VideoStream, decode_video
from ingest.flow import DIS_PRESETS, get_backend
from ingest.ucf101 import VideoEntry
from core.cli import HelpFormatter
from shards.format import (DEFAULT_FLOW_BOUND, DEFAULT_TEST_CLIPS, STACK, SampleMeta, encode_jpeg,
                           encode_sample, quantise_flow)
from core.threads import local_ray_options, pin_threads

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
# worker processes forked from a clean server: a fork of a caller that runs threads (a Ray driver,
# torch's pools) can deadlock in the child
POOLS = multiprocessing.get_context("forkserver")
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

    from ingest.shard_plan import Options, plan_shards
    from ingest.shard_worker import build_shard
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




# --- the stage-sum bound: decode, flow and encode of the same clips, each timed alone ---
def stage_times(src: str, short_side: int | None, preset: str, repeats: int) -> dict:
    """Median over ``repeats`` of each stage's wall and CPU seconds on one video, in this
    process with one thread: the ingest's decode pass, its flow calls, its sample encodes."""
    pin_threads(1)
    backend = get_backend("dis", preset=preset)
    entry = VideoEntry(path=f"X/v_{Path(src).stem}.avi", class_name="X", label=0, group=1, clip=1)
    runs = {name: [] for name in ("decode", "flow", "encode", "decode_cpu", "flow_cpu", "encode_cpu")}
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        with VideoStream(src, short_side=short_side, threads=1) as video:
            clips = clip_frames(video.declared, DEFAULT_TEST_CLIPS)
            flow_frames = {i for f in clips for a, b in zip(f, f[1:]) if a != b for i in (a, b)}
            centres = {f[STACK // 2] for f in clips}
            gray, rgb = {}, {}
            for i, picture in enumerate(video.pictures()):
                if i in flow_frames:
                    gray[i] = video.luma(picture)
                if i in centres:
                    rgb[i] = video.rgb(picture)
        runs["decode"].append(time.perf_counter() - t)
        runs["decode_cpu"].append(time.process_time() - c)
        assert i + 1 == video.declared, (src, i + 1, video.declared)
        pairs = sorted({a for f in clips for a, b in zip(f, f[1:]) if a != b})
        stack = np.stack([gray.get(i, gray[pairs[0]]) for i in range(max(gray) + 1)])
        fields, spent, spent_cpu = {}, 0.0, 0.0
        flows = backend.fields(stack, pairs)
        for a in pairs:  # only the calls are timed; quantising is the ingest's own work
            t, c = time.perf_counter(), time.process_time()
            field = next(flows)
            spent, spent_cpu = spent + time.perf_counter() - t, spent_cpu + time.process_time() - c
            fields[a] = quantise_flow(field, DEFAULT_FLOW_BOUND)
        runs["flow"].append(spent)
        runs["flow_cpu"].append(spent_cpu)
        todo = []
        for k, f in enumerate(clips):
            tile = tile_quantised([fields[a] for a, b in zip(f, f[1:])])
            meta = SampleMeta(video=entry.video_id, clip=k, label=0, class_name="X", frames=f,
                              centre_frame=f[STACK // 2], fps=video.fps, width=video.width,
                              height=video.height, flow_method="dis", flow_bound=DEFAULT_FLOW_BOUND,
                              flow_options=backend.options, clamped=False)
            todo.append((rgb[f[STACK // 2]], tile, meta))
        t, c = time.perf_counter(), time.process_time()
        for args in todo:
            encode_sample(*args)
        runs["encode"].append(time.perf_counter() - t)
        runs["encode_cpu"].append(time.process_time() - c)
    return {name: statistics.median(values) for name, values in runs.items()} | {"pairs": len(pairs)}


# --- memory: peak RSS of a fresh worker that ingests one long or one short 720p video ---


# --- contention: two busy loops this benchmark starts and stops ---
INGEST_CPU: dict[str, dict[str, float]] = {}  # per ingest run: CPU seconds by process name


def run_ingest(videos: Path, lists: Path, out: Path, workers: int, short_side, preset: str, n: int,
               exclude: set[int] = frozenset()) -> tuple[float, float]:
    """(wall s, CPU s of this process tree but the ``exclude`` pids) of one ``build_shards``."""
    with TreeCpu(exclude=exclude) as meter:
        t = time.perf_counter()
        summary = build_shards(videos, lists, 1, out, workers=workers, short_side=short_side,
                               flow_options={"preset": preset}, progress=False)
        wall = time.perf_counter() - t
    cpu = meter.seconds
    INGEST_CPU[out.name] = meter.by_name()
    assert summary.failed == 0 and summary.ok == n, summary
    return wall, cpu


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ingest", description=__doc__.split("\n")[0],
                                epilog="exit codes: 0 measured; "
                                       "1 a measurement failed (traceback); 2 bad command line",
                                formatter_class=HelpFormatter)
    p.add_argument("--repeat", type=int, default=70, help="copies of each of the 3 clips")
    p.add_argument("--workers", type=int, default=2, help="Ray workers (processes)")
    p.add_argument("--short-side", type=int, default=None, help="resize frames to this short side (default: source size)")
    p.add_argument("--presets", nargs="+", default=["fast", "medium"], choices=sorted(DIS_PRESETS),
                   help="DIS presets; the first also gets the baseline, scaling and contention phases")
    p.add_argument("--preset", default=None, choices=sorted(DIS_PRESETS), help="one preset (as --presets X)")
    p.add_argument("--clips", nargs="+", choices=list(CLIPS), default=None,
                   help="only these clips (ApplyEyeMakeup is the real UCF101 one: XviD, 320x240)")
    p.add_argument("--stage-repeats", type=int, default=3, help="stage-sum: median of this many timings per clip")
    p.add_argument("--long-seconds", type=float, default=300.0, help="memory: the long 720p video")
    p.add_argument("--short-seconds", type=float, default=10.0, help="memory: the short 720p video")
    p.add_argument("--skip", nargs="+", default=[], choices=["flow_only", "baseline", "scaling", "rss", "contention"],
                   help="leave these phases out (their JSON figures are null)")
    p.add_argument("--quick", action="store_true",
                   help="small sizes (a few minutes): --repeat 4 unless given, --presets fast, "
                        "--long-seconds 60, --stage-repeats 1")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here as one JSON object")
    p.add_argument("--profile", action="store_true",
                   help="only profile build_shard in one process (no Ray, bound or baseline)")
    p.add_argument("--keep", type=Path, default=None, help="work here and keep the outputs")
    a = p.parse_args(argv)
    if a.preset:
        a.presets = [a.preset]
    if a.quick:
        given = argv if argv is not None else sys.argv[1:]
        a.repeat = a.repeat if "--repeat" in given else 4
        a.presets = a.presets if any(x in given for x in ("--presets", "--preset")) else ["fast"]
        a.long_seconds = a.long_seconds if "--long-seconds" in given else 60.0
        a.stage_repeats = a.stage_repeats if "--stage-repeats" in given else 1
    import ray

    root = Path(a.keep or tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        videos, lists, paths = make_folder(root / "data", a.repeat, a.clips)
        if a.profile:
            return profile_shard(videos, lists, root, a.short_side, a.presets[0])
        result = measure(a, root, videos, lists, paths, ray)
        if a.json:
            a.json.parent.mkdir(parents=True, exist_ok=True)
            a.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
            print(f"\nfigures written to {a.json}")
    finally:
        if a.keep is None:
            shutil.rmtree(root, ignore_errors=True)


def measure(a, root: Path, videos: Path, lists: Path, paths: list[Path], ray) -> dict:
    sources = [src for name, src in CLIPS.items() if not a.clips or name in a.clips]
    n_frames = {src: len(decode_video(REAL_VIDEOS / src, short_side=a.short_side)) for src in sources}
    pairs = a.repeat * sum(len(needed_pairs(k)) for k in n_frames.values())
    n, first = len(paths), a.presets[0]
    print(f"{n} videos ({a.repeat} x {list(n_frames.values())} frames), {pairs} frame pairs, "
          f"{a.workers} workers, DIS {' and '.join(a.presets)}, short side {a.short_side or 'source'}, "
          f"{os.cpu_count()} CPUs, {load()}")
    result = {"stage_sum_ratio": None, "baseline_speedup": None, "worker_scaling": None,
              "rss_ratio": None, "contention_slowdown": None,
              "details": {"videos": n, "pairs": pairs, "workers": a.workers, "repeat": a.repeat,
                          "short_side": a.short_side, "presets": a.presets, "cpus": os.cpu_count(),
                          "load_before": os.getloadavg(), "ingest": {}, "stage_sum": {}, "phases_load": {}}}
    d = result["details"]

    t = time.perf_counter()
    ray.init(num_cpus=a.workers, include_dashboard=False, log_to_driver=False, **local_ray_options())
    print(f"Ray start-up (not counted): {time.perf_counter() - t:.1f} s")
    rows, ingest = [], {}
    try:
        for preset in a.presets:
            d["phases_load"][f"ingest_{preset}"] = os.getloadavg()
            ingest[preset] = run_ingest(videos, lists, root / f"shards-{preset}", a.workers, a.short_side, preset, n)
            rows.append((f"ingest DIS {preset} ({a.workers} workers)", *ingest[preset], pairs))
            print(f"  ingest DIS {preset}: {ingest[preset][0]:.1f} s  [{load()}]")
        if "scaling" not in a.skip:
            d["phases_load"]["ingest_1_worker"] = os.getloadavg()
            one = run_ingest(videos, lists, root / "shards-1worker", 1, a.short_side, first, n)
            rows.append((f"ingest DIS {first} (1 worker)", *one, pairs))
            print(f"  ingest DIS {first}, 1 worker: {one[0]:.1f} s  [{load()}]")
            result["worker_scaling"] = one[0] / ingest[first][0]
            d["scaling"] = {"one_worker_s": one[0], "workers_s": ingest[first][0],
                            "one_worker_cpu": one[1], "workers_cpu": ingest[first][1]}
        if "contention" not in a.skip:
            d["phases_load"]["contention"] = os.getloadavg()
            with BusyLoops(2) as loops:  # their CPU is not the ingest's
                busy = run_ingest(videos, lists, root / "shards-busy", a.workers, a.short_side, first, n,
                                  exclude={p.pid for p in loops.procs})
            rows.append((f"ingest DIS {first} beside 2 busy loops", *busy, pairs))
            print(f"  ingest DIS {first} beside 2 busy loops: {busy[0]:.1f} s  [{load()}]")
            result["contention_slowdown"] = busy[0] / ingest[first][0]
            d["contention"] = {"busy_s": busy[0], "idle_s": ingest[first][0], "busy_cpu": busy[1]}
    finally:
        ray.shutdown()

    srcs = [str(REAL_VIDEOS / s) for s in sources]
    print(f"stage-sum bound: each stage alone, one process, 1 thread, median of {a.stage_repeats}  [{load()}]")
    for preset in a.presets:
        with POOLS.Pool(1) as pool:
            parts = [pool.apply(stage_times, (src, a.short_side, preset, a.stage_repeats)) for src in srcs]
        total = {k: a.repeat * sum(part[k] for part in parts) for k in parts[0] if k != "pairs"}
        assert a.repeat * sum(part["pairs"] for part in parts) == pairs
        bound_s = (total["decode"] + total["flow"] + total["encode"]) / a.workers
        bound_cpu = total["decode_cpu"] + total["flow_cpu"] + total["encode_cpu"]
        wall, cpu = ingest[preset]
        ratio, ratio_cpu = bound_s / wall, bound_cpu / cpu
        d["stage_sum"][preset] = {**total, "bound_wall_s": bound_s, "bound_cpu_s": bound_cpu,
                                  "ingest_wall_s": wall, "ingest_cpu_s": cpu,
                                  "ratio_wall": ratio, "ratio_cpu": ratio_cpu}
        d["ingest"][preset] = {"wall_s": wall, "cpu_s": cpu, "pairs_per_s": pairs / wall}
        if preset == first:
            result["stage_sum_ratio"] = ratio
        ms = lambda x: 1e3 * x / pairs  # noqa: E731 (per pair, in one process)
        print(f"  DIS {preset}: per pair decode {ms(total['decode']):.2f} + flow {ms(total['flow']):.2f} + "
              f"encode {ms(total['encode']):.2f} = {ms(a.workers * bound_s):.2f} ms; ingest "
              f"{ms(a.workers * wall):.2f} worker-ms ({ms(cpu):.2f} CPU-ms, Ray included)\n"
              f"    bound {bound_s:.1f} s on {a.workers} workers vs ingest {wall:.1f} s: "
              f"{ratio:.1%} (wall), {ratio_cpu:.1%} (CPU)  (goal >= 90 %)")
        rows.append((f"stage-sum bound DIS {preset}", bound_s, bound_cpu, pairs))
    result["stage_sum_ratio_by_preset"] = {k: v["ratio_wall"] for k, v in d["stage_sum"].items()}
    d["ingest_cpu_by_process"] = INGEST_CPU
    for preset in a.presets:
        parts = INGEST_CPU.get(f"shards-{preset}", {})
        print(f"  ingest DIS {preset}: CPU s by process: "
              + ", ".join(f"{name} {cpu:.1f}" for name, cpu in list(parts.items())[:8] if cpu >= 0.05))

    if "flow_only" not in a.skip:
        with POOLS.Pool(a.workers, initializer=_load, initargs=(srcs, a.short_side, first)) as pool:
            pool.map(_ready, range(4 * a.workers), chunksize=1)  # workers up, frames decoded
            with TreeCpu() as meter:
                t = time.perf_counter()
                assert sum(pool.map(_flow_only, [str(p.resolve()) for p in paths], chunksize=1)) == pairs
                bound_s = time.perf_counter() - t
            bound_cpu = meter.seconds
        rows.append((f"flow-only bound DIS {first}", bound_s, bound_cpu, pairs))
        d["flow_only"] = {"wall_s": bound_s, "cpu_s": bound_cpu, "ratio_wall": bound_s / ingest[first][0]}

    if "baseline" not in a.skip:
        base = root / "per_file"
        jobs = [(str(path), str(base / path.parent.name / path.stem), a.short_side, first) for path in paths]
        d["phases_load"]["baseline"] = os.getloadavg()
        with POOLS.Pool(a.workers) as pool:
            with TreeCpu() as meter:
                t = time.perf_counter()
                base_pairs = sum(pool.map(_per_file, jobs, chunksize=1))
                base_s = time.perf_counter() - t
            base_cpu = meter.seconds
        rows.append((f"baseline DIS {first} (JPEG per frame/field)", base_s, base_cpu, base_pairs))
        wall, cpu = ingest[first]
        result["baseline_speedup"] = (pairs / wall) / (base_pairs / base_s)
        shard_files, shard_bytes = tree_size(root / f"shards-{first}")
        base_files, base_bytes = tree_size(base)
        d["baseline"] = {"wall_s": base_s, "cpu_s": base_cpu, "pairs": base_pairs,
                         "speedup_cpu": (pairs / cpu) / (base_pairs / base_cpu),
                         "files": [shard_files, base_files], "bytes": [shard_bytes, base_bytes]}

    if "rss" not in a.skip:
        print(f"memory: one video per fresh worker, DIS {first}, short side {a.short_side or 'source'}")
        rss = measure_rss(root / "rss", a.long_seconds, a.short_seconds, a.short_side, first)
        result["rss_ratio"] = rss["rss_ratio"]
        d["rss"] = rss | {"long_seconds": a.long_seconds, "short_seconds": a.short_seconds}

    print(f"\n{'method':44s} {'wall s':>7s} {'videos/s':>8s} {'pairs/s':>7s} {'CPU s':>7s} {'pairs/CPU s':>11s}")
    for name, s, cpu, k in rows:
        print(f"{name:44s} {s:7.1f} {n / s:8.2f} {k / s:7.0f} {cpu:7.1f} {k / cpu:11.0f}")
    print()
    for preset, v in d["stage_sum"].items():
        print(f"ingest / stage-sum bound DIS {preset:6s}: wall {v['ratio_wall']:6.1%}, CPU {v['ratio_cpu']:6.1%}"
              f"  (goal >= 90 %)")
    if "flow_only" in d:
        print(f"ingest / flow-only bound DIS {first}: wall {d['flow_only']['ratio_wall']:6.1%}  (issue 2's, for comparison)")
    if "baseline" in d:
        b = d["baseline"]
        print(f"ingest / baseline (pairs/s) DIS {first}: wall {result['baseline_speedup']:5.2f}x, "
              f"CPU {b['speedup_cpu']:5.2f}x  (goal >= 1.5x); files {b['files'][0]} vs {b['files'][1]}, "
              f"bytes {b['bytes'][0] / 2**20:.1f} vs {b['bytes'][1] / 2**20:.1f} MiB")
    if result["worker_scaling"] is not None:
        print(f"scaling: {a.workers} workers / 1 worker = {result['worker_scaling']:.2f}x  (goal >= 1.8x with 2)")
    if result["rss_ratio"] is not None:
        print(f"worker peak RSS: long / short video = {result['rss_ratio']:.2f}  (goal <= 1.25)")
    if result["contention_slowdown"] is not None:
        print(f"beside 2 busy loops: {result['contention_slowdown']:.2f}x the idle wall time  (goal <= 2.5x)")
    print(f"{load()} (scaling and contention figures mean something only on an otherwise idle machine)")
    d["load_after"] = os.getloadavg()
    return result


if __name__ == "__main__":
    main()
