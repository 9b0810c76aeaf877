"""What ``benchmarks.ingest`` measures besides time: the CPU seconds of a process tree, a
folder's size, the machine's load, a worker's peak memory on long and short videos, and the
long test videos it writes for that."""
from __future__ import annotations

import multiprocessing
import os
import resource
import time
from pathlib import Path

import av
import cv2
import numpy as np

from ingest.shard_plan import Options, ShardJob
from ingest.shard_worker import build_shard
from ingest.ucf101 import VideoEntry


def process_cpu() -> dict[int, tuple[int, float]]:
    """{pid: (parent pid, own user + system CPU seconds)} of every process, from Linux /proc."""
    tick, found = os.sysconf("SC_CLK_TCK"), {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # ended meanwhile
            found[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return found


class TreeCpu:
    """CPU seconds spent by this process and its descendants while the block runs (Ray's
    processes included), sampled every ``interval`` s (a scan costs a few ms) so that
    processes that start and end inside the block (killed Ray actors, pool workers) count
    too, up to their last sample.
    Unlike wall time, this barely moves when other jobs share the cores.

        with TreeCpu() as cpu: ...
        cpu.seconds
    """

    def __init__(self, interval: float = 0.5, exclude: set[int] = frozenset()):
        self.interval, self.seconds, self.exclude = interval, 0.0, set(exclude)
        self._start: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._names: dict[int, str] = {}

    def _sample(self) -> None:
        procs = process_cpu()
        tree, frontier = {os.getpid()}, {os.getpid()}
        while frontier:
            frontier = {pid for pid, (ppid, _) in procs.items() if ppid in frontier} - tree
            tree |= frontier
        for pid in tree - self.exclude:
            self._last[pid] = procs[pid][1]
            try:  # the latest name: a Ray worker is "ray::IDLE" until it runs an actor
                self._names[pid] = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                pass

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "TreeCpu":
        import threading
        self._sample()
        self._start = dict(self._last)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.seconds = sum(cpu - self._start.get(pid, 0.0) for pid, cpu in self._last.items())

    def by_name(self) -> dict[str, float]:
        """CPU seconds per process name (``ray::ShardBuilder``, ``raylet``, ``gcs_server``, …)."""
        found: dict[str, float] = {}
        for pid, cpu in self._last.items():
            name = "this process" if pid == os.getpid() else self._names.get(pid, "?")
            found[name] = found.get(name, 0.0) + cpu - self._start.get(pid, 0.0)
        return dict(sorted(found.items(), key=lambda kv: -kv[1]))


def tree_size(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def load() -> str:
    """The 1, 5 and 15 minute load averages, for every figure measured."""
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def write_segment(path: Path, seconds: float, fps: int = 25, width: int = 1280, height: int = 720) -> int:
    """``seconds`` of a smoothly textured camera pan, MPEG-4 part 2 (UCF101's codec) in AVI."""
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), (0, 0), 4)
    n = int(round(seconds * fps))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.thread_count = 1
        for t in range(n):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.roll(texture, 3 * t, axis=1), format="rgb24")))
        out.mux(stream.encode())
    return n


def repeat_segment(src: Path, dst: Path, times: int) -> None:
    """``src`` played ``times`` times in a row: its packets remuxed with shifted timestamps
    (it starts with a key frame and has no B-frames), no re-encoding."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = inp.streams.video[0]
        target = out.add_stream_from_template(stream)
        packets = [p for p in inp.demux(stream) if p.dts is not None]
        step = packets[-1].pts - packets[0].pts + (packets[1].pts - packets[0].pts)
        for r in range(times):
            for p in packets:
                q = av.Packet(bytes(p))
                q.pts, q.dts, q.time_base, q.stream = p.pts + r * step, p.dts + r * step, p.time_base, target
                q.is_keyframe = p.is_keyframe
                out.mux(q)


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM: unlike getrusage's ru_maxrss, not inherited
    from the parent a spawned process was forked from)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _peak_rss(folder: str, name: str, out: str, short_side: int | None, preset: str) -> dict:
    """In a fresh process: ``build_shard`` of a one-video shard; the process's peak RSS."""
    before = peak_rss_mib()
    entry = VideoEntry(path=name, class_name=Path(name).parent.name, label=0, group=1, clip=1)
    opts = Options(split=1, short_side=short_side, flow_options={"preset": preset})
    t = time.perf_counter()
    [row] = build_shard(ShardJob("test", 0, (entry,)), Path(folder), Path(out), opts)
    assert row["status"] == "ok", row["error"]
    return {"frames": row["frames"], "seconds": time.perf_counter() - t,
            "rss_before_mib": before, "peak_rss_mib": peak_rss_mib()}


def measure_rss(root: Path, long_s: float, short_s: float, short_side: int | None, preset: str) -> dict:
    videos = root / "videos" / "Long"
    videos.mkdir(parents=True)
    segment = videos / "v_Long_g01_c01.avi"
    t = time.perf_counter()
    write_segment(segment, short_s)
    repeat_segment(segment, videos / "v_Long_g01_c02.avi", max(1, round(long_s / short_s)))
    print(f"generated the 720p videos ({short_s:g} s, {long_s:g} s, 25 fps) in {time.perf_counter() - t:.1f} s")
    found = {}
    spawn = multiprocessing.get_context("spawn")
    for label, name in (("short", segment.name), ("long", "v_Long_g01_c02.avi")):
        with spawn.Pool(1) as pool:  # a fresh process each: its peak is this video's alone
            found[label] = pool.apply(_peak_rss, (str(root / "videos"), f"Long/{name}", str(root / label),
                                                 short_side, preset))
        print(f"  {label:5s} video: {found[label]['frames']:5d} frames, {found[label]['seconds']:6.1f} s, "
              f"worker peak RSS {found[label]['peak_rss_mib']:7.1f} MiB "
              f"(after imports {found[label]['rss_before_mib']:.1f} MiB)  [{load()}]")
    found["rss_ratio"] = found["long"]["peak_rss_mib"] / found["short"]["peak_rss_mib"]
    return found
