"""Where a piece of work ran: the host name and, inside Ray, the Ray node id.

Every result row and manifest row carries both, so a run on a cluster shows which node
produced what (and a node failure shows which rows were redone elsewhere). It lives in
``shards`` because that folder imports nothing of ours: ingest, training and analysis can all
use it.
"""
from __future__ import annotations

import socket
import sys


def node_info() -> dict[str, str | None]:
    """``{"host": hostname, "node_id": Ray node id hex or None outside a Ray process}``."""
    ray = sys.modules.get("ray")  # never import Ray just to ask
    node_id = None
    if ray is not None and ray.is_initialized():
        node_id = ray.get_runtime_context().get_node_id()
    return {"host": socket.gethostname(), "node_id": node_id}
