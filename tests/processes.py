"""Real processes for the tests that stop or kill them (not a test module: test modules import it).

A command under test runs in a session of its own (``start_new_session``), so everything it
spawned — Ray's raylet, GCS, workers — is found from ``/proc`` by that session id and killed
whatever the test's outcome.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


def session_pids(sid: int) -> list[int]:
    """Processes of session ``sid`` (from /proc): a driver started with start_new_session and
    everything it spawned, its local Ray included."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # field 6 of /proc/<pid>/stat: session id
            pids.append(int(stat.parent.name))
    return pids


def kill_session(sid: int) -> None:
    """SIGKILL every process of session ``sid`` until none is left (10 s at most)."""
    for _ in range(20):
        pids = session_pids(sid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)


@dataclass
class Stopped:
    stderr: str
    seconds: float  # from the signal to the process's exit
    left: list[int]  # processes of its session still there 5 s after it exited (Ray's, workers)


def signal_when(proc: subprocess.Popen, ready: Callable[[], bool], signum: int, *, wait: float = 240,
                stop_within: float = 120, shown: Callable[[], str] = lambda: "") -> Stopped:
    """Send ``signum`` to ``proc`` once ``ready()`` holds (polled while it runs) and wait for it
    to exit. The test fails if ``proc`` ends or ``wait`` s pass before ``ready()``; its session
    is killed in any case, after noting what was left of it. ``shown()``: what to print when
    it fails (e.g. the log so far)."""
    try:
        deadline = time.monotonic() + wait
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                why = "ended" if proc.returncode is not None else f"not ready in {wait:.0f} s"
                kill_session(proc.pid)
                stdout, stderr = proc.communicate(timeout=30)
                raise AssertionError(f"{why} before the signal: "
                                     f"{shown()}{stdout or ''}\n{(stderr or '')[-3000:]}")
            time.sleep(0.2)
        sent = time.monotonic()
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=stop_within)
        seconds = time.monotonic() - sent
        for _ in range(10):  # the driver is gone; give its children a moment to follow
            if not (left := session_pids(proc.pid)):
                break
            time.sleep(0.5)
        return Stopped(stderr or "", seconds, left)
    finally:
        kill_session(proc.pid)
