"""Real Ray clusters for tests: a head node and worker nodes started with ``ray start`` on
this machine, each in its own process session and ports, with a temp dir of its own or, as
plain `ray start` commands on one host do, one shared temp dir (then the nodes also share
the job's unpacked working_dir, which one node's setup deletes under the others: see
``pipeline.sweep.check_node_temp_dirs``). Stops exactly the processes it started, whatever
happens in the test."""
from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.processes import kill_session

BIN = Path(sys.executable).parent


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def free_port_range(n: int, low: int = 20000, high: int = 32000) -> int:
    """The first of ``n`` consecutive free ports below Linux's ephemeral range (where
    ``free_ports`` draws from), so a node's worker ports never overlap its other ports."""
    for _ in range(100):
        base = random.randrange(low, high - n)
        try:
            socks = []
            for port in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports in {low}-{high}")


def token_env() -> dict:
    """The environment for nodes and clients: one explicit token (Ray 2.60 turns token auth
    on for local clusters), this venv's `ray` first on PATH, no inherited RAY_ADDRESS."""
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    return env


@dataclass
class Node:
    process: subprocess.Popen
    temp: Path
    killed: bool = False

    def kill(self) -> None:
        """kill -9 the node: its raylet, agents and every worker process it started."""
        self.killed = True
        kill_session(self.process.pid)


@dataclass
class Cluster:
    env: dict
    gcs: str  # host:port for `ray start --address`
    dashboard: str  # http://host:port for `ray job ...`
    nodes: list[Node] = field(default_factory=list)
    shared_temp: Path | None = None  # one temp dir for every node, else one each

    def ray(self, *args: str, timeout: float = 60, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
        """The ``ray`` CLI against this cluster (``env``: variables set over the cluster's)."""
        return subprocess.run([str(BIN / "ray"), *args], env={**self.env, **(env or {})}, capture_output=True,
                              text=True, timeout=timeout, **kwargs)

    def add_node(self, *, cpus: int, gpus: int = 0, head: bool = False) -> Node:
        temp = self.shared_temp or Path(tempfile.mkdtemp(prefix="raynode-", dir="/tmp"))  # short paths
        ports = free_ports(8)
        workers = free_port_range(41)
        command = [str(BIN / "ray"), "start", "--block", "--num-cpus", str(cpus), "--num-gpus", str(gpus),
                   "--temp-dir", str(temp), "--disable-usage-stats",
                   "--object-store-memory", str(200 * 2**20),
                   "--dashboard-agent-listen-port", str(ports[0]), "--dashboard-agent-grpc-port", str(ports[1]),
                   "--runtime-env-agent-port", str(ports[2]), "--metrics-export-port", str(ports[3]),
                   "--node-manager-port", str(ports[4]), "--object-manager-port", str(ports[5]),
                   "--min-worker-port", str(workers), "--max-worker-port", str(workers + 40)]
        if head:
            command += ["--head", "--port", self.gcs.split(":")[1], "--dashboard-host", "127.0.0.1",
                        "--dashboard-port", self.dashboard.rsplit(":", 1)[1],
                        "--ray-client-server-port", str(ports[7])]
        else:
            command += ["--address", self.gcs]
        log = open(temp / f"node{len(self.nodes)}.log", "w")
        process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        node = Node(process, temp)
        self.nodes.append(node)
        return node

    def start_node(self, *, cpus: int, gpus: int = 0, head: bool = False, attempts: int = 3,
                   timeout: float = 180) -> Node:
        """``add_node`` and wait until its `ray start` reports the runtime started. Ray gives a
        raylet 30 s to register with the GCS, too little on a loaded machine: a node that timed
        out is killed and started again, up to ``attempts`` times."""
        logs = []
        for _ in range(attempts):
            node = self.add_node(cpus=cpus, gpus=gpus, head=head)
            log = node.temp / f"node{len(self.nodes) - 1}.log"
            deadline = time.time() + timeout
            while node.process.poll() is None and time.time() < deadline:
                if "Ray runtime started" in log.read_text(errors="replace"):
                    return node
                time.sleep(1)
            logs.append(log.read_text(errors="replace")[-2000:])
            node.kill()
        raise AssertionError(f"a node did not start in {attempts} attempts:\n" + "\n".join(logs))

    def alive_nodes(self) -> int:
        status = self.ray("list", "nodes", "--address", self.dashboard, "--filter", "state=ALIVE",
                          "--format", "json")
        try:
            return len(json.loads(status.stdout)) if status.returncode == 0 else 0
        except json.JSONDecodeError:  # "No resource in the cluster" while it starts
            return 0

    def wait_for(self, nodes: int, timeout: float = 180) -> None:
        deadline = time.time() + timeout
        while self.alive_nodes() < nodes:
            dead = [n for n in self.nodes if n.process.poll() is not None and not n.killed]
            assert not dead and time.time() < deadline, \
                "\n".join(log.read_text()[-2000:] for n in self.nodes for log in n.temp.glob("node*.log"))
            time.sleep(2)


@contextmanager
def ray_cluster(*, head_cpus: int, head_gpus: int = 0, workers: list[dict] = (),
                share_temp_dir: bool = False, env: dict | None = None):
    """A head node and ``workers`` (dicts of ``cpus``, ``gpus``), all alive when it yields;
    ``env`` adds variables (e.g. Ray's ``RAY_health_check_*`` settings) for every node."""
    gcs, dashboard = free_ports(2)
    cluster = Cluster({**token_env(), **(env or {})}, f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dashboard}",
                      shared_temp=Path(tempfile.mkdtemp(prefix="raynodes-", dir="/tmp")) if share_temp_dir else None)
    try:
        cluster.start_node(cpus=head_cpus, gpus=head_gpus, head=True)
        cluster.wait_for(1)
        for n, spec in enumerate(workers, start=2):  # one at a time: nodes sharing a temp dir
            cluster.start_node(**spec)               # race for its socket names otherwise
            cluster.wait_for(n)
        yield cluster
    finally:
        for node in reversed(cluster.nodes):
            node.process.send_signal(signal.SIGTERM)  # `ray start --block` stops its own processes
        for node in reversed(cluster.nodes):
            try:
                node.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            node.kill()  # and whatever is left of its session, by pid
            shutil.rmtree(node.temp, ignore_errors=True)
