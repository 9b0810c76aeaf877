"""GPU validation kit: every GPU measure of the project in one run, each step capped in time.

    python -m benchmarks.gpu_check --out runs/gpu_check            # on a GPU machine
    python -m benchmarks.gpu_check --out /tmp/gc --dry-run         # every step on the CPU, tiny sizes

Each step runs in its own subprocess (``--step NAME``) under its own time cap, and all of them
within ``--budget`` seconds (scripts/gpu_check.sh passes what is left of the issue's 8 minutes
after installing the wheels), so a hung or crashing step costs only its cap; whatever happens,
``gpu_check.json`` (one entry per measure: name, value, unit, goal, met, error) and
``gpu_check.md`` (the same as one table) are written, and rewritten after every step.
The steps reuse benchmarks/irof.py, pruning.py, loader.py and the training code.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from core.cli import HelpFormatter

ROOT = Path(__file__).resolve().parent.parent

# step: (cap in seconds on a GPU, cap in a dry run). The GPU caps add up to 420 s, leaving a
# minute of the 8 for joining and installing the wheels. Dry-run caps only catch hangs: they
# are generous because CI machines are shared.
STEPS = {
    "cuda_tests": (75, 120),
    "loader": (50, 120),
    "boundness": (70, 120),
    "irof": (45, 120),
    "pruning": (45, 120),
    "flow": (25, 120),
    "sweep": (110, 420),
}
BUDGET = 480  # seconds: the 8 minutes for the whole command
PRUNE_STEPS = {6: "21.72 %", 7: "24.86 %", 14: "43.53 %"}  # grid step k: 1 - 0.96**k removed


def measure(name, value, unit, goal=None, met=None, error=None) -> dict:
    return {"name": name, "value": value, "unit": unit, "goal": goal, "met": met, "error": error}


def _device(dry: bool) -> str:
    import torch
    if dry:
        return "cpu"
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA GPU visible to torch (use --dry-run to check the kit on a CPU)")
    return "cuda"


def _sync(device: str) -> None:
    import torch
    if device == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------- steps: each returns measures

def _cuda_test_files() -> list[str]:
    """Every test file with a cuda-marked test (found by text, so new ones join by themselves)."""
    return sorted(str(ROOT / "tests" / p.name) for p in (ROOT / "tests").glob("test_*.py") if "mark.cuda" in p.read_text())


class _Outcomes:
    """A pytest plugin counting collected tests and outcomes as the terminal summary does:
    a failure outside the test call (setup, teardown) is an error."""

    def __init__(self):
        self.collected, self.counts = 0, {"passed": 0, "failed": 0, "error": 0, "skipped": 0}

    def pytest_collection_finish(self, session):
        self.collected = len(session.items)

    def pytest_runtest_logreport(self, report):
        if report.when == "call":
            self.counts[report.outcome] += 1
        elif report.failed:
            self.counts["error"] += 1
        elif report.skipped:  # skipped in setup (a skip mark, a missing GPU)
            self.counts["skipped"] += 1


def _pytest(args: list[str], collect_only: bool) -> _Outcomes:
    """One pytest run in this process; its counts."""
    import pytest
    outcomes = _Outcomes()
    code = pytest.main(["-q", "-p", "no:cacheprovider", *args, *(["--collect-only"] if collect_only else [])],
                       plugins=[outcomes])
    if code not in (0, 1, 5):  # 1: some tests failed (counted); 2-4: interrupted, internal or usage error
        raise RuntimeError(f"pytest {' '.join(args)} exit {int(code)}")
    return outcomes


def step_cuda_tests(dry: bool, work: Path) -> list[dict]:
    """The cuda-marked tests, then every DALI test (on a GPU their loaders decode with ``mixed``,
    against the CPU reference reader). A dry run runs the cuda-marked tests (each skips without
    a GPU) and only collects the DALI tests."""
    out = []
    for name, args, collect_only in (
            ("cuda-marked tests", ["-m", "cuda", *_cuda_test_files()], False),
            ("DALI tests (mixed on a GPU)", [str(ROOT / "tests" / "test_dali.py")], dry)):
        run = _pytest(args, collect_only)
        if collect_only:
            out.append(measure(f"{name} collected (dry run)", run.collected, "tests"))
            continue
        c = run.counts
        failed = c["failed"] + c["error"]
        out.append(measure(f"{name} passed", c["passed"], f"of {run.collected} tests ({c['skipped']} skipped)",
                           "all pass", None if dry else failed == 0 and c["passed"] > 0,
                           f"{c['failed']} failed, {c['error']} errors" if failed else None))
    return out


def _shards(work: Path, dry: bool) -> list[Path]:
    """Train shards of image-like synthetic samples written straight to tar (no video decoding,
    no Ray), once per kit run in ``<work>/../data``: 320x240 frames (UCF101's size) on a GPU,
    40x36 in a dry run."""
    import numpy as np
    import torch

    from shards.dali import shard_paths
    from shards.format import STACK, SampleMeta, encode_sample, tile_flow
    from shards.tarfiles import write_shard
    folder = work.parent / "data"
    if (folder / "done").exists():
        return shard_paths(folder)
    (h, w), shards, per_shard = ((36, 40), 2, 8) if dry else ((240, 320), 8, 64)
    rng = np.random.default_rng(0)

    def smooth(*shape):  # low-frequency noise plus grain: JPEG sizes like video frames'
        coarse = torch.from_numpy(rng.normal(size=(1, shape[0], h // 8, w // 8)).astype(np.float32))
        x = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear")[0].numpy()
        return x + 0.1 * rng.normal(size=x.shape)

    for s in range(shards):
        samples = []
        for i in range(per_shard):
            rgb = np.clip(128 + 50 * smooth(3), 0, 255).astype(np.uint8).transpose(1, 2, 0)
            flow = (4 * smooth(2 * STACK)).reshape(2, STACK, h, w).transpose(1, 2, 3, 0).astype(np.float32)
            video = f"v_kit_g{s:02d}_c{i:02d}"
            meta = SampleMeta(video=video, clip=0, label=i % 8, class_name=f"class{i % 8}",
                              frames=list(range(STACK + 1)), centre_frame=STACK // 2, fps=25.0,
                              width=w, height=h, flow_method="synthetic")
            samples.append(encode_sample(rgb, tile_flow(flow, meta.flow_bound), meta))
        write_shard(folder / f"shard-{s:06d}.tar", samples)
    (folder / "done").touch()
    return shard_paths(folder)


def step_loader(dry: bool, work: Path) -> list[dict]:
    """DALI samples/s, ``mixed`` (GPU) vs the CPU pipeline, spatial and temporal (train, random
    crop); a dry run times the CPU pipeline only."""
    from benchmarks.loader import epochs_rate
    from shards.dali import LoaderConfig, make_loader
    paths = _shards(work, dry)
    size, batch, epochs = (32, 4, 2) if dry else (224, 64, 8)
    goals = {"spatial": 10_000, "temporal": 3_000}
    out = []
    for stream in ("spatial", "temporal"):
        rates = {}
        for device in ("cpu",) if dry else ("gpu", "cpu"):
            cfg = LoaderConfig(stream=stream, train=True, crop_mode="random", batch_size=batch,
                               input_size=size, threads=2 if dry else min(8, os.cpu_count() or 1), device=device)
            rates[device] = rate = epochs_rate(make_loader(paths, cfg), epochs if device == "gpu" else 2)
            gpu = device == "gpu"
            out.append(measure(f"DALI {stream} {'mixed' if gpu else 'cpu'} {size}px", round(rate, 1), "samples/s",
                               f">= {goals[stream]}" if gpu else None, rate >= goals[stream] if gpu else None))
        if not dry:
            out.append(measure(f"DALI {stream} mixed / cpu", round(rates["gpu"] / rates["cpu"], 2), "x"))
    return out


def _train_rate(model, batches, device: str, steps: int) -> float:
    """Samples/s of SGD steps with bf16 autocast on the GPU and channels_last, as training.loop."""
    import torch
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    amp = device == "cuda"
    n, start = 0, None
    for i, (x, y) in enumerate(batches):
        if i == steps + 1:
            break
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        y = y.to(device, non_blocking=True)
        with torch.autocast("cuda" if amp else "cpu", dtype=torch.bfloat16, enabled=amp):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if start is None:  # first step: warm-up
            _sync(device)
            start = time.perf_counter()
            continue
        n += len(y)
    _sync(device)
    return n / (time.perf_counter() - start)


def step_boundness(dry: bool, work: Path) -> list[dict]:
    """Training samples/s fed by the real DALI loader vs the same model fed one batch already on
    the device (ResNet-18 and -50, both streams, bf16 autocast on a GPU, channels_last); the
    ratio shows whether training is loader-bound."""
    import itertools

    import torch
    from shards.dali import LoaderConfig, make_loader
    from training.models import build_stream
    device = _device(dry)
    paths = _shards(work, dry)
    size, batch, steps = (16, 2, 1) if dry else (224, 64, 25)
    out = []
    for arch in ("resnet18", "resnet50"):
        for stream in ("spatial", "temporal"):
            model = build_stream(stream, arch, 101).to(device).to(memory_format=torch.channels_last).train()
            cfg = LoaderConfig(stream=stream, train=True, crop_mode="random", batch_size=batch, input_size=size,
                               threads=2 if dry else min(8, os.cpu_count() or 1), device="cpu" if dry else "gpu")
            loader = make_loader(paths, cfg)

            def real():
                while True:  # epoch after epoch, as long as the timing needs
                    for b in loader:
                        yield b["x"], b["label"].long()
            feed = real()
            held = tuple(t.to(device) for t in next(feed))  # one batch, kept on the device
            in_memory = _train_rate(model, itertools.repeat(held), device, steps)
            fed = _train_rate(model, feed, device, steps)
            ratio = fed / in_memory
            out.append(measure(f"loader-bound ratio {arch} {stream}", round(ratio, 3), "real/in-memory",
                               ">= 0.95", None if dry else ratio >= 0.95))
    return out


def step_irof(dry: bool, work: Path) -> list[dict]:
    """benchmarks/irof.py on the device: ours vs its forward-pass bound and vs quantus.IROF."""
    from benchmarks import irof as bench
    args = bench.parser().parse_args(
        ["--stream", "temporal", "--size", "16" if dry else "64", "--samples", "1" if dry else "16",
         "--batch-sizes", "64" if dry else "128,256", "--repeats", "1" if dry else "3",
         "--device", _device(dry)])
    lines = []
    result = bench.run(args, log=lines.append)
    print("\n".join(lines))
    bound, quantus = result["ours_over_bound"], result["ours_over_quantus"]
    return [measure("IROF ours / forward-pass bound", round(bound, 3), "ratio", ">= 0.90",
                    None if dry else bound >= 0.9),
            measure("IROF speed ours / quantus", round(quantus, 2), "x", "> 1", None if dry else quantus > 1),
            measure("IROF forward passes per run", result["passes"], "passes")]


def step_pruning(dry: bool, work: Path) -> list[dict]:
    """benchmarks/pruning.py at 21.72/24.86/43.53 % (steps 6, 7, 14) against the unpruned model:
    latency, throughput, and latency speedup / FLOPs speedup (goal >= 0.8 at 43.53 %), for the
    paper config's internal pruning and for residual pruning."""
    from benchmarks.pruning import GOAL_STEP, benchmark
    device = _device(dry)
    batch = 2 if dry else 64
    args = argparse.Namespace(archs=["resnet18"] if dry else ["resnet50"], streams=["spatial", "temporal"],
                              steps=list(PRUNE_STEPS), batch_sizes=[batch], input_size=32 if dry else 224,
                              repeats=1 if dry else 10, pruning=["internal", "residual"], min_channels=8, round_to=8,
                              channels_last=True, threads=None, seed=0, csv=None, device=device,
                              amp=device == "cuda")
    out = []
    for row in benchmark(args).iter_rows(named=True):
        model = f"{row['arch']} {row['stream']} {row['pruning']}"
        base_ms, pruned_ms = row[f"base_ms_b{batch}"], row[f"pruned_ms_b{batch}"]
        if row["step"] == min(PRUNE_STEPS) and row["pruning"] == "internal":  # one unpruned row per model
            out.append(measure(f"unpruned {row['arch']} {row['stream']} b{batch}", round(batch / base_ms * 1000, 1),
                               "samples/s"))
        name = f"pruned {model} {PRUNE_STEPS[row['step']]} b{batch}"
        eff = row[f"efficiency_b{batch}"]
        goal = row["step"] == GOAL_STEP
        out += [measure(f"{name} throughput", round(batch / pruned_ms * 1000, 1), "samples/s"),
                measure(f"{name} latency speedup", row[f"latency_speedup_b{batch}"], "x"),
                measure(f"{name} FLOPs speedup", row["flops_speedup"], "x"),
                measure(f"{name} latency/FLOPs speedup", eff, "ratio", ">= 0.8" if goal else None,
                        (eff >= 0.8) if goal and not dry else None)]
    return out


def step_flow(dry: bool, work: Path) -> list[dict]:
    """raft_small (random weights) on the device in pairs/s against DIS on the CPU."""
    import numpy as np
    import torch
    from torchvision.models.optical_flow import raft_small

    from ingest.flow import DisFlow, RaftFlow
    device = _device(dry)
    weights = work / "raft_small_random.pt"  # speed only: random weights, saved as a local file
    torch.save(raft_small(weights=None).state_dict(), weights)
    h, w, n = (32, 32, 2) if dry else (240, 320, 64)
    frames = np.random.default_rng(0).integers(0, 255, (n + 1, h, w, 3), dtype=np.uint8)
    starts = list(range(n))
    rates = {}
    for name, backend in (("dis cpu", DisFlow()),
                          (f"raft_small {device}", RaftFlow("raft_small", weights=weights, device=device,
                                                            batch_size=n if dry else 32))):
        backend.pairs(frames, starts[:2])  # warm-up
        _sync(device)
        start = time.perf_counter()
        backend.pairs(frames, starts)
        _sync(device)
        rates[name] = n / (time.perf_counter() - start)
    out = [measure(f"flow {k} {w}x{h}", round(v, 1), "pairs/s") for k, v in rates.items()]
    return out + [measure(f"flow raft_small {device} / dis cpu", float(f"{rates[f'raft_small {device}'] / rates['dis cpu']:.3g}"), "x")]  # 3 significant digits: RAFT on a CPU is ~1000x slower


def sweep_config(dry: bool, root: Path) -> dict:
    """ray_configs/demo.yaml, every stage; on a GPU with channels_last, the trials sharing the
    GPU and every core; in a dry run tiny: 2 classes, 1 run, 1 epoch, 1 pruning step of the study's
    chain only, 32 px."""
    import yaml
    cfg = yaml.safe_load((ROOT / "ray_configs" / "demo.yaml").read_text())
    cfg["experiment"].update(name="gpu_check", root=str(root))
    cfg["stages"] = ["data", "train", "prune", "fuse", "explain", "report"]
    if dry:
        cfg["data"].update(synthetic={"classes": 2, "appearances": 2, "groups": 3, "clips": 1, "frames": 12,
                                      "width": 48, "height": 32}, short_side=32, clips_per_video=2,
                           test_clips=2, workers=1)
        cfg["model"]["input_size"] = 32
        cfg["train"].update(runs=1, epochs=1, batch_size=4, val_fraction=0.0)
        cfg["loader"]["device"] = "cpu"
        cfg["eval"]["batch_size"] = 8
        cfg["fusion"].update(methods=["mean", "svm_softmax"], svm_c=1.0, fit_on="train")
        cfg["prune"].update(steps=1, chains=["slimming"])  # the controls run the same code: tested elsewhere
        cfg["explain"].update(steps=[0, 1], max_videos=2, figure_videos=[])
    else:
        cpus = os.cpu_count() or 2
        cfg["train"]["channels_last"] = True
        cfg["data"]["workers"] = cpus
        cfg["ray"].update(num_cpus=cpus, cpus_per_trial=2, gpus_per_trial=0.25)  # 4 trials at once
    return cfg


def step_sweep(dry: bool, work: Path) -> list[dict]:
    """The sweep end to end in one ``pipeline.sweep`` process, each stage timed from its
    progress lines as they appear."""
    import yaml
    path = work / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep_config(dry, work / "sweep")))
    child = subprocess.Popen([sys.executable, "-m", "pipeline.sweep", "--config", str(path)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, started, tail = [], {}, []
    total = time.perf_counter()
    for line in child.stdout:
        print(line, end="", flush=True)  # into the step's log, even if the step is stopped at its cap
        tail = (tail + [line.rstrip()])[-20:]
        if m := re.match(r"stage (\w+) \(\d+/\d+\): (running|done)", line):
            stage, what = m.groups()
            if what == "running":
                started[stage] = time.perf_counter()
            else:
                out.append(measure(f"sweep stage {stage}", round(time.perf_counter() - started[stage], 1), "s"))
    if child.wait():
        raise RuntimeError(f"pipeline.sweep exit {child.returncode}: " + " | ".join(tail[-3:]))
    out.append(measure("sweep end to end", round(time.perf_counter() - total, 1), "s"))
    return out


def step_fail(dry: bool, work: Path) -> list[dict]:
    """A step that always fails: the summary must still be written (used by the kit's test)."""
    raise RuntimeError("deliberate failure")


STEP_FUNCTIONS = {name: globals()[f"step_{name}"] for name in [*STEPS, "fail"]}


# ---------------------------------------------------------------- driver

def run_step(name: str, dry: bool, cap: float, work: Path) -> list[dict]:
    """One step in a subprocess under ``cap`` seconds; failures become an entry with ``error``."""
    result = work / f"{name}.json"
    cmd = [sys.executable, "-m", "benchmarks.gpu_check", "--step", name, "--result", str(result)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if dry:
        cmd.append("--dry-run")
        # one thread per step: on a shared CI machine several spinning OpenMP threads per step
        # made small CPU kernels 10x slower
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    start = time.perf_counter()
    # its own process group, so that a step over its cap is stopped with everything it started
    child = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        stdout, stderr = child.communicate(timeout=cap)
        error = None if child.returncode == 0 else (stderr.strip().splitlines() or [f"exit {child.returncode}"])[-1]
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        stdout, stderr = child.communicate()
        error = f"time cap of {cap:.0f} s exceeded"
    seconds = round(time.perf_counter() - start, 1)
    (work / f"{name}.log").write_text(stdout + stderr)  # kept beside the summary
    if error is None and result.exists():
        rows = json.loads(result.read_text())
    else:
        rows = [measure(name, None, None, error=error or "no result written")]
    print(f"{name:12s} {seconds:7.1f} s  {'FAILED: ' + error if error else 'ok'}", flush=True)
    return rows + [measure(f"step {name} time", seconds, "s", f"<= {cap:.0f}")]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _machine() -> str:
    try:
        import torch
    except ImportError as exc:  # the steps will say what they miss; the summary is still written
        return f"torch not importable ({exc})"
    return f"torch {torch.__version__}, {torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}"


def write_summary(rows: list[dict], out: Path, header: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(rows, indent=1))
    fmt = lambda v: "" if v is None else str(v).replace("|", "\\|")
    lines = [header, "", "| name | value | unit | goal | met | error |", "| --- | ---: | --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(fmt(r[k]) for k in ("name", "value", "unit", "goal", "met", "error")) + " |"
              for r in rows]
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n")[0],
                                epilog="exit codes: 0 summary written (failed steps are rows with `error`); "
                                       "1 the driver itself crashed (traceback); 2 bad command line",
                                formatter_class=HelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/gpu_check"), help="where gpu_check.json/.md go")
    p.add_argument("--dry-run", action="store_true", help="every step on the CPU with tiny sizes")
    p.add_argument("--steps", nargs="+", choices=list(STEP_FUNCTIONS), default=list(STEPS),
                   help="steps to run (default: all; 'fail' always fails, to test the summary)")
    p.add_argument("--budget", type=float, default=None,
                   help=f"seconds for all steps together; a step gets at most what is left and is skipped "
                        f"with under 5 s (default: {BUDGET} on a GPU, none in a dry run)")
    p.add_argument("--serial", action="store_true",
                   help="in a dry run, run the sweep after the other steps instead of beside them")
    p.add_argument("--step", choices=list(STEP_FUNCTIONS), help=argparse.SUPPRESS)  # internal: one step
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.budget is not None and args.budget < 0:
        p.error(f"--budget must be >= 0 seconds, got {args.budget}")
    if args.step:  # child: run one step, write its measures
        work = args.result.parent / args.step  # beside the other steps' folders: shared data in ../data
        work.mkdir(exist_ok=True)
        rows = STEP_FUNCTIONS[args.step](args.dry_run, work)
        args.result.write_text(json.dumps(rows))
        return 0
    header = f"# GPU check{' (dry run on the CPU)' if args.dry_run else ''}: {_machine()}"
    budget = args.budget if args.budget is not None else (None if args.dry_run else BUDGET)
    deadline = None if budget is None else time.monotonic() + budget
    results, lock = {}, threading.Lock()

    def step(name: str, work: Path) -> None:
        cap = STEPS.get(name, (30, 30))[1 if args.dry_run else 0]
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left < 5:
            rows = [measure(name, None, None, error=f"skipped: the budget of {budget:.0f} s is spent")]
            print(f"{name:12s} skipped: the budget is spent", flush=True)
        else:
            rows = run_step(name, args.dry_run, cap if left is None else min(cap, left), work)
        with lock:  # rewritten after every step: a kit killed from outside still leaves a summary
            results[name] = rows
            write_summary([r for n in args.steps if n in results for r in results[n]], args.out, header)

    # In a dry run the sweep (mostly Ray starting processes and waiting on them) runs beside
    # the other steps, which keeps the dry run short in CI; on a GPU every step runs alone.
    beside = "sweep" if args.dry_run and not args.serial and "sweep" in args.steps and len(args.steps) > 1 else None
    start, cpu = time.perf_counter(), _children_cpu()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work, ThreadPoolExecutor(1) as pool:
        background = pool.submit(step, beside, Path(work)) if beside else None
        for name in args.steps:
            if name != beside:
                step(name, Path(work))
        if background:
            background.result()
        for log in Path(work).glob("*.log"):
            (args.out / "logs").mkdir(parents=True, exist_ok=True)
            log.replace(args.out / "logs" / log.name)
    write_summary([r for n in args.steps for r in results.get(n, [])], args.out, header)
    print(f"all steps: {time.perf_counter() - start:.1f} s, {_children_cpu() - cpu:.1f} s CPU; "
          f"summary: {args.out / 'gpu_check.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
