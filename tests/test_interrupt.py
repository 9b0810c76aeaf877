"""core.interrupt with real signals to a real process: 130 / 143, a second Ctrl-C exits at once."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.layout import REPO

SCRIPT = """
import sys, time
from core.interrupt import as_interrupted, stop_on_signals
with stop_on_signals():
    try:
        print("ready", flush=True)
        time.sleep(60)
    except KeyboardInterrupt as exc:
        stopped = as_interrupted(exc)
        print("cleaning up after", stopped.name, flush=True)
        if sys.argv[1] == "slow":
            time.sleep(60)  # a long cleanup, which a second signal cuts short
        sys.exit(stopped.exit_code)
"""


def run(signals: list[int], cleanup: str) -> tuple[int, str, str, float]:
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, cleanup], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline() == "ready\n"
    t0 = time.monotonic()
    for i, number in enumerate(signals):
        proc.send_signal(number)
        if i + 1 < len(signals):  # the next one lands during the cleanup
            assert proc.stdout.readline().startswith("cleaning up after")
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out, err, time.monotonic() - t0


@pytest.mark.parametrize("number, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_unwinds_the_block_and_exits_with_128_plus_its_number(number, code):
    returncode, out, _, _ = run([number], "fast")
    assert returncode == code and f"cleaning up after {signal.Signals(number).name}" in out


def test_a_second_ctrl_c_during_the_cleanup_exits_at_once():
    returncode, _, err, seconds = run([signal.SIGINT, signal.SIGINT], "slow")
    assert returncode == 130 and "SIGINT again: exiting now" in err and seconds < 20
