"""One place that sizes every library's thread pool to a task's CPU allotment.

A Ray task or actor gets ``num_cpus`` CPUs, but the libraries inside it size their own pools
from the machine: OpenCV's pthreads pool, torch's OpenMP (intra-op) and inter-op pools, MKL /
OpenBLAS, FFmpeg's frame and slice threads, DALI's CPU workers. With several tasks per node
that is more runnable threads than cores, and OpenMP / OpenCV pool threads spin while they
wait for work: beside other busy processes each spinning thread burns the time slice the
working one needs. ``pin_threads()`` is called at the start of every ingest worker, train /
prune / explain trial and task; ``THREAD_ENV`` is what child processes read at start-up.

    n = pin_threads()          # inside Ray: the CPUs Ray assigned to this task/actor
    n = pin_threads(cfg_cpus)  # or an explicit allotment (e.g. ray.cpus_per_trial)

Priority: Ray starts its worker processes at niceness 15 (its ``worker_niceness`` setting),
so beside any ordinary process (another job, a busy loop) a task gets a small fraction of a
core — CFS weighs nice 15 against nice 0 as 36 to 1024 — however its threads are set. A local
Ray started by this project passes ``RAY_SYSTEM_CONFIG`` (workers at niceness 0, a fair share);
cluster nodes need ``RAY_worker_niceness=0`` in the environment of ``ray start``.

This module imports nothing of ours and no heavy library: OpenCV and torch are pinned only
if the process has already imported them (their environment variables cover a later import).
"""
from __future__ import annotations

import os
import sys

# read by OpenMP (torch's intra-op pool), MKL, OpenBLAS, numexpr, Accelerate when they load
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS")
# OpenMP threads that wait for work sleep instead of spinning (libgomp, Intel OpenMP)
WAIT_VARS = {"OMP_WAIT_POLICY": "PASSIVE"}
# for ray.init(_system_config=...) of a local Ray: workers at the niceness of everything else
RAY_SYSTEM_CONFIG = {"worker_niceness": 0}
# the same for `ray start` (a cluster node's raylet reads it from its environment)
RAY_NODE_ENV = {"RAY_worker_niceness": "0"}


def local_ray_options() -> dict:
    """Keyword arguments for a ``ray.init`` that starts a local Ray (not one that connects).
    A ``RAY_worker_niceness`` in the environment wins (e.g. 15 to measure Ray's default)."""
    if "RAY_worker_niceness" in os.environ:
        return {}
    return {"_system_config": dict(RAY_SYSTEM_CONFIG)}


def machine_cpus() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def ray_cpus() -> float | None:
    """The CPUs Ray assigned to the current task or actor; None outside a Ray worker (or when
    the task asked for none)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    try:
        context = ray.get_runtime_context()
        if context.worker.mode != ray.WORKER_MODE:  # the driver has no allotment
            return None
        cpus = context.get_assigned_resources().get("CPU")
    except Exception:  # an older or newer Ray without these: fall back to the caller's number
        return None
    return cpus or None


def allotment(cpus: float | None = None) -> int:
    """Threads to use: ``cpus`` if given, else Ray's assignment, else the machine's; at least 1,
    fractional CPUs rounded down (a 0.5-CPU task gets one thread)."""
    if cpus is None:
        cpus = ray_cpus()
    if cpus is None:
        cpus = machine_cpus()
    return max(1, int(cpus))


def thread_env(n: int) -> dict[str, str]:
    """Environment for child processes (and for libraries not loaded yet) with ``n`` threads."""
    return {**dict.fromkeys(THREAD_VARS, str(n)), **WAIT_VARS}


def pin_threads(cpus: float | None = None) -> int:
    """Size the thread pools of this process to ``allotment(cpus)``; returns that number.

    Sets the environment (``thread_env``), OpenCV (``cv2.setNumThreads``) and torch
    (``set_num_threads``; ``set_num_interop_threads`` too while torch still allows it, i.e.
    before its first parallel work), each only if already imported. PyAV decoders take the
    number per stream (``decoder_threads``), DALI per pipeline (``num_threads``)."""
    n = allotment(cpus)
    os.environ.update(thread_env(n))
    cv2 = sys.modules.get("cv2")
    if cv2 is not None:
        cv2.setNumThreads(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
        if torch.get_num_interop_threads() != n:
            try:
                torch.set_num_interop_threads(n)
            except RuntimeError:  # torch allows it once, before any inter-op work: leave it
                pass
    return n


def decoder_threads(cpus: float | None = None) -> tuple[int, str]:
    """(thread_count, thread_type) for a PyAV/FFmpeg decoder of a task with this allotment:
    one thread decodes in the calling thread (FFmpeg starts no pool), more use frame and
    slice threads."""
    n = allotment(cpus)
    return n, ("AUTO" if n > 1 else "SLICE")


def thread_report() -> dict[str, int]:
    """What each loaded library reports now (tests, benchmarks), plus the process's OS threads."""
    report = {}
    cv2 = sys.modules.get("cv2")
    if cv2 is not None:
        report["cv2"] = cv2.getNumThreads()
    torch = sys.modules.get("torch")
    if torch is not None:
        report["torch"] = torch.get_num_threads()
        report["torch_interop"] = torch.get_num_interop_threads()
    report["omp_env"] = int(os.environ.get("OMP_NUM_THREADS", "0"))
    try:
        report["os_threads"] = len(os.listdir("/proc/self/task"))
    except OSError:
        pass
    return report
