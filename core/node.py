"""Where a piece of work ran: the host name and, inside Ray, the Ray node id; and whether a
process on this host still runs.

Every result row and manifest row carries host and node id, so a run on a cluster shows which
node produced what (and a node failure shows which rows were redone elsewhere). Locks and
scratch folders name their process, and are taken over or removed once it is gone.
"""
from __future__ import annotations

import os
import socket
import sys


def node_info() -> dict[str, str | None]:
    """``{"host": hostname, "node_id": Ray node id hex or None outside a Ray process}``."""
    ray = sys.modules.get("ray")  # never import Ray just to ask
    node_id = None
    if ray is not None and ray.is_initialized():
        node_id = ray.get_runtime_context().get_node_id()
    return {"host": socket.gethostname(), "node_id": node_id}


def process_running(pid: int) -> bool:
    """Whether a process with this id runs on this host (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
