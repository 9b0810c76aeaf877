"""Is a sweep's wall time fair beside other busy processes? Stage times idle and beside busy loops.

Runs a cut-down demo sweep (``--config``, default the demo with 1 run of 2 epochs: stages
``data`` and ``train``) twice in fresh roots, each as its own ``python -m pipeline.sweep``
process with its own local Ray: once as the machine is, once beside ``--busy`` processes
running ``while True: pass`` (started and stopped here). On a 2-core machine two busy loops
leave a fair share of about half the cores, so about 2x the idle time; goal (issue 20) <= 2.5x.
The load average is printed before each run: on a machine shared with other jobs the idle
run is not idle and the ratio is not the goal's.

Before issue 20, Ray ran its workers at niceness 15: beside nice-0 busy loops a worker got a
sliver of a core (the demo's data stage 12.6x, its train stage > 15x). ``--niceness 15``
reproduces that (``RAY_worker_niceness`` for both runs).

    python -m benchmarks.contention                     # demo data + train, 1 run, 2 epochs
    python -m benchmarks.contention --stages data --json /tmp/contention.json
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core.cli import HelpFormatter

DONE = re.compile(r"stage (\w+) \(\d+/\d+\): done in (\d+) s")


class BusyLoops:
    """``n`` processes running ``while True: pass`` while the block runs (only these are stopped)."""

    def __init__(self, n: int = 2):
        self.n, self.procs = n, []

    def __enter__(self) -> "BusyLoops":
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.n)]
        time.sleep(1.0)
        return self

    def __exit__(self, *exc) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(timeout=10)


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def run_sweep(config: Path, root: Path, sets: list[str], stages: list[str], env: dict, log: Path) -> dict:
    """One sweep in its own process: {stage: seconds} from its log, and the total wall time."""
    cmd = [sys.executable, "-m", "pipeline.sweep", "--config", str(config),
           "--set", f"experiment.root={root}", *[x for s in sets for x in ("--set", s)], "--stages", *stages]
    t = time.perf_counter()
    with log.open("w") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    wall = time.perf_counter() - t
    text = log.read_text()
    if rc:
        raise SystemExit(f"sweep failed (exit {rc}), see {log}:\n{text[-2000:]}")
    return {"stages": {m.group(1): float(m.group(2)) for m in DONE.finditer(text)}, "wall_s": wall}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.contention", description=__doc__.split("\n")[0],
                                epilog="exit codes: 0 measured; 1 a sweep failed; 2 bad command line",
                                formatter_class=HelpFormatter)
    p.add_argument("--config", type=Path, default=Path("ray_configs/demo.yaml"), help="sweep config")
    p.add_argument("--set", dest="sets", action="append",
                   default=None, metavar="KEY=VALUE", help="sweep overrides (default: train.runs=1, train.epochs=2)")
    p.add_argument("--stages", nargs="+", default=["data", "train"], help="sweep stages timed")
    p.add_argument("--busy", type=int, default=2, help="busy-loop processes beside the second run")
    p.add_argument("--niceness", type=int, default=None, help="RAY_worker_niceness for both runs "
                   "(default: the project's, 0; 15 is Ray's own default)")
    p.add_argument("--keep", type=Path, default=None, help="work (roots, logs) here and keep it")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here as JSON")
    a = p.parse_args(argv)
    sets = a.sets if a.sets is not None else ["train.runs=1", "train.epochs=2"]
    env = dict(os.environ)
    if a.niceness is not None:
        env["RAY_worker_niceness"] = str(a.niceness)
    work = Path(a.keep or tempfile.mkdtemp(prefix="bench-contention-"))
    work.mkdir(parents=True, exist_ok=True)
    result = {"config": str(a.config), "sets": sets, "stages": a.stages, "busy": a.busy,
              "niceness": a.niceness if a.niceness is not None else 0, "cpus": os.cpu_count()}
    try:
        for phase in ("idle", "busy"):
            result[f"load_{phase}"] = os.getloadavg()
            print(f"{phase} run  [{load()}]", flush=True)
            if phase == "idle":
                found = run_sweep(a.config, work / phase, sets, a.stages, env, work / f"{phase}.log")
            else:
                with BusyLoops(a.busy):
                    found = run_sweep(a.config, work / phase, sets, a.stages, env, work / f"{phase}.log")
            result[phase] = found
            print(f"  {found['stages']}, process {found['wall_s']:.0f} s  [{load()}]", flush=True)
        idle, busy = result["idle"], result["busy"]
        result["slowdown"] = {s: busy["stages"][s] / max(idle["stages"][s], 1.0) for s in idle["stages"]}
        result["slowdown_total"] = busy["wall_s"] / idle["wall_s"]
        for stage, ratio in result["slowdown"].items():
            print(f"{stage}: {idle['stages'][stage]:.0f} s idle, {busy['stages'][stage]:.0f} s beside "
                  f"{a.busy} busy loops: {ratio:.2f}x  (goal <= 2.5x)")
        print(f"whole sweep process: {result['slowdown_total']:.2f}x; {load()}")
        if a.json:
            a.json.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        if a.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
