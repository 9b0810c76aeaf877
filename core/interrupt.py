"""Ctrl-C and a scheduler's SIGTERM stop a run at once, cleanly (issue 31).

``stop_on_signals()`` makes SIGINT and SIGTERM raise :class:`Interrupted` in the main thread,
so the run unwinds through its ``finally`` blocks: Ray actors and tasks are killed, Ray is
shut down, folder locks are released. A second signal during that unwinding exits at once
(``os._exit``), for a user who does not want to wait. The caller prints one line saying what
finished and how to continue, and exits with :attr:`Interrupted.exit_code` (130 for SIGINT,
143 for SIGTERM: 128 + the signal's number, as shells report it).

``Interrupted`` is a ``KeyboardInterrupt``: library code that catches ``Exception`` (Ray
Tune's loop, retry helpers) lets it through. Ray's C++ waits turn any exception a signal
handler raises into a plain ``KeyboardInterrupt``: :func:`as_interrupted` turns it back into
the ``Interrupted`` of the signal that was received.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_active = None  # the handler of the innermost stop_on_signals block, for reclaim_signals
_received: list[int] = []  # the signal that stopped the innermost block, if any


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal; ``exit_code`` is 128 + its number."""

    def __init__(self, signum: int):
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(self.name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextmanager
def stop_on_signals():
    """Within the block, SIGINT/SIGTERM raise ``Interrupted``; a second one exits at once.

    Outside the main thread (signals cannot be caught there) the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    global _active, _received
    received: list[int] = []

    def handler(signum, frame):
        if received:  # already stopping: the user does not want to wait for the cleanup
            print(f"\n{signal.Signals(signum).name} again: exiting now, without cleaning up",
                  file=sys.stderr, flush=True)
            os._exit(128 + received[0])
        received.append(signum)
        raise Interrupted(signum)

    outer, _active = _active, handler
    outer_received, _received = _received, received
    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        _active, _received = outer, outer_received
        for s, old in previous.items():
            signal.signal(s, old)


def as_interrupted(exc: KeyboardInterrupt) -> Interrupted:
    """``exc`` as the ``Interrupted`` of the signal received (SIGINT if none was: a plain Ctrl-C
    outside a block), keeping the attributes a caller attached on the way up."""
    if isinstance(exc, Interrupted):
        return exc
    stopped = Interrupted(_received[0] if _received else signal.SIGINT)
    stopped.__dict__.update({k: v for k, v in vars(exc).items() if k not in ("signum", "name")})
    return stopped


def reclaim_signals() -> None:
    """Put the block's handler back after a library replaced it (``ray.init`` sets a SIGTERM
    handler that exits with status 15, skipping the one-line summary and the 143)."""
    if _active is not None and threading.current_thread() is threading.main_thread():
        for s in SIGNALS:
            signal.signal(s, _active)
