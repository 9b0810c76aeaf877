"""Progress bars that also work in logs: live on a terminal, a line every 30 s elsewhere.

Inside Ray workers (and under ``ray job submit``, nohup, CI) stderr is not a terminal. A plain
tqdm there either is switched off (``disable=None``) or floods the log with carriage-return
updates. ``progress`` instead writes whole lines at most every ``LOG_INTERVAL`` seconds, so a
trial's log shows how far it got without growing much.
"""
from __future__ import annotations

import io
import os
import sys

from tqdm import tqdm

LOG_INTERVAL = float(os.environ.get("CROSSROADS_PROGRESS_INTERVAL", 30))  # seconds between log lines


class _Lines(io.TextIOBase):
    """Turns tqdm's carriage-return redraws into one plain line per update."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def progress(iterable=None, *, file=None, interval: float | None = None, **kwargs) -> tqdm:
    """``tqdm(iterable, **kwargs)`` on a terminal; on anything else (a log file, a Ray worker's
    captured stderr) one line at most every ``interval`` seconds (default ``LOG_INTERVAL``)."""
    stream = file if file is not None else sys.stderr
    if kwargs.pop("disable", None):  # asked for no bar at all (None, tqdm's "not a TTY", is not)
        return tqdm(iterable, disable=True, **kwargs)
    if hasattr(stream, "isatty") and stream.isatty():
        return tqdm(iterable, file=stream, **kwargs)
    kwargs.setdefault("mininterval", LOG_INTERVAL if interval is None else interval)
    kwargs.setdefault("maxinterval", max(kwargs["mininterval"], 10))
    kwargs.setdefault("delay", kwargs["mininterval"])  # loops shorter than that print nothing
    return tqdm(iterable, file=_Lines(stream), ncols=0, **kwargs)  # ncols=0: counts and rates, no bar
