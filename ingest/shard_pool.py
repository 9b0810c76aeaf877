"""The shards built on Ray: ``workers`` ``ShardBuilder`` actors, one shard a call, the progress
bar fed from the spools, and a shard whose builder's process died (the OOM killer, a crash,
``kill -9``, a lost node) handed to a fresh builder (``MAX_RETRIES`` times)."""
from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from core.interrupt import reclaim_signals
from core.threads import local_ray_options

from ingest.shard_plan import Options, ShardJob
from ingest.shard_worker import VIDEO_TRIES, spool_rows, build_shard, flow_pairs, in_progress


MAX_RETRIES = 3  # a shard whose builder process died between videos is taken over by a new one, this often


PROGRESS_POLL_S = 2.0  # how often the driver counts the videos finished inside running shards


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


def run_on_ray(jobs: list[ShardJob], videos: Path, out: Path, opts: Options, workers: int,
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
                    count(job, spool_rows(job, out, seen.setdefault(job.name, set())))
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
