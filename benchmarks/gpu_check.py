"""GPU validation kit: every GPU measure of the project in one run, each step capped in time.

    python -m benchmarks.gpu_check --out runs/gpu_check            # on a GPU machine
    python -m benchmarks.gpu_check --out /tmp/gc --dry-run         # every step on the CPU, tiny sizes

Each step runs in its own subprocess (``--step NAME``) under its own time cap, so a hung or
crashing step costs only its cap; whatever happens, ``gpu_check.json`` (one entry per measure:
name, value, unit, goal, met, error) and ``gpu_check.md`` (the same as one table) are written.
The steps reuse benchmarks/loader.py, irof.py, pruning.py and the training code.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (step, cap in seconds on a GPU, cap in a dry run). The caps add up to under 8 minutes.
STEPS = {
    "cuda_tests": (90, 60),
    "loader": (60, 60),
    "boundness": (90, 60),
    "irof": (45, 90),
    "pruning": (45, 60),
    "flow": (30, 60),
    "sweep": (120, 120),
}


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

def step_cuda_tests(dry: bool, work: Path) -> list[dict]:
    """The cuda-marked tests (DALI on ``mixed`` among them); on a CPU they are only collected."""
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda", "tests/test_dali.py",
            "tests/test_ingest_flow.py", "tests/test_irof.py"]
    if dry:
        args.append("--collect-only")
    run = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    tail = run.stdout.strip().splitlines()[-1:] or [""]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|error|errors|skipped|tests? collected)", tail[0])}
    if run.returncode not in (0, 5):
        raise RuntimeError(f"pytest exit {run.returncode}: {tail[0]}")
    if dry:
        n = sum(v for k, v in counts.items() if "collected" in k)
        return [measure("cuda tests collected (dry run)", n, "tests")]
    return [measure("cuda tests passed", counts.get("passed", 0), "tests", "all pass",
                    counts.get("failed", 0) + counts.get("errors", 0) + counts.get("error", 0) == 0)]


def _shards(work: Path, dry: bool) -> list[Path]:
    """Synthetic shards, built once per kit run (``work`` is the driver's folder, shared by steps)."""
    from benchmarks import loader as bench
    from shards.dali import shard_paths
    work = work.parent / "data"
    if dry and (work / "split1" / "train").is_dir():
        return shard_paths(work / "split1" / "train")
    if dry:  # a smaller synthetic set than the benchmark's
        from ingest.build_shards import build_shards
        from ingest.synthetic import generate
        videos = generate(work / "videos", classes=2, groups=3, clips=1, frames=12, width=80, height=60)
        build_shards(videos, videos / "ucfTrainTestlist", 1, work / "split1", clips_per_video=2,
                     test_clips=2, workers=1)
        return shard_paths(work / "split1" / "train")
    return bench.synthetic_shards(work)


def step_loader(dry: bool, work: Path) -> list[dict]:
    """DALI samples/s, ``mixed`` (GPU) vs the CPU pipeline, spatial and temporal (train, random crop)."""
    from benchmarks.loader import epochs_rate
    from shards.dali import LoaderConfig, make_loader
    paths = _shards(work, dry)
    size, batch, epochs = (32, 4, 2) if dry else (224, 128, 3)
    goals = {"spatial": 10_000, "temporal": 3_000}
    out = []
    for stream in ("spatial", "temporal"):
        for device in ("cpu",) if dry else ("gpu", "cpu"):
            cfg = LoaderConfig(stream=stream, train=True, crop_mode="random", batch_size=batch,
                               input_size=size, threads=2 if dry else 8, device=device)
            rate = epochs_rate(make_loader(paths, cfg), epochs)
            gpu = device == "gpu"
            out.append(measure(f"DALI {stream} {'mixed' if gpu else 'cpu'} {size}px", round(rate, 1), "samples/s",
                               f">= {goals[stream]}" if gpu else None, rate >= goals[stream] if gpu else None))
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
            loss = torch.nn.functional.cross_entropy(model(x), y)
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
    """Training samples/s fed by the real DALI loader vs the same model fed tensors already on
    the device; the ratio shows whether training is loader-bound."""
    import itertools

    import torch
    from shards.dali import LoaderConfig, make_loader
    from training.models import build_stream
    device = _device(dry)
    paths = _shards(work, dry)
    size, batch, steps = (32, 4, 3) if dry else (224, 64, 30)
    archs = ["resnet18"] if dry else ["resnet18", "resnet50"]
    out = []
    for arch in archs:
        for stream in ("spatial", "temporal"):
            model = build_stream(stream, arch, 101).to(device).to(memory_format=torch.channels_last).train()
            cfg = LoaderConfig(stream=stream, train=True, crop_mode="random", batch_size=batch, input_size=size,
                               threads=2 if dry else 8, device="cpu" if dry else "gpu")
            loader = make_loader(paths, cfg)

            def real():
                for b in itertools.cycle([loader]):
                    for x in b:
                        yield x["x"], x["label"].long() % 101
            first = next(iter(loader))
            x0 = first["x"].to(device)
            y0 = first["label"].long().to(device) % 101
            held = _train_rate(model, itertools.repeat((x0, y0)), device, steps)
            fed = _train_rate(model, real(), device, steps)
            ratio = fed / held
            out.append(measure(f"loader-bound ratio {arch} {stream}", round(ratio, 3), "real/in-memory",
                               ">= 0.95", None if dry else ratio >= 0.95))
    return out


def _run_bench(module: str, args: list[str]) -> str:
    run = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True)
    if run.returncode:
        raise RuntimeError(f"{module} exit {run.returncode}: {run.stderr.strip()[-400:]}")
    return run.stdout


def step_irof(dry: bool, work: Path) -> list[dict]:
    """benchmarks/irof.py on the device: ours vs its forward-pass bound and vs quantus.IROF."""
    args = ["--stream", "temporal", "--size", "16" if dry else "64", "--samples", "1" if dry else "64",
            "--batch-sizes", "64" if dry else "64,128,256", "--repeats", "1" if dry else "3",
            "--device", _device(dry)]
    text = _run_bench("benchmarks.irof", args)
    bound = float(re.search(r"ours / bound\s+([\d.]+)", text).group(1))
    quantus = float(re.search(r"ours / quantus\s+([\d.]+)", text).group(1))
    return [measure("IROF ours / forward-pass bound", bound, "ratio", ">= 0.90", None if dry else bound >= 0.9),
            measure("IROF speed ours / quantus", quantus, "x", "> 1", None if dry else quantus > 1)]


def step_pruning(dry: bool, work: Path) -> list[dict]:
    """benchmarks/pruning.py at 21.72/24.86/43.53 % (steps 6, 7, 14): latency speedup vs FLOPs speedup."""
    from benchmarks.pruning import benchmark
    device = _device(dry)
    batch = 2 if dry else 64
    args = argparse.Namespace(archs=["resnet18"] if dry else ["resnet50"], streams=["spatial"] if dry else
                              ["spatial", "temporal"], steps=[14] if dry else [6, 7, 14], batch_sizes=[batch],
                              input_size=32 if dry else 224, repeats=1 if dry else 10, residual=True,
                              min_channels=8, round_to=8, channels_last=True, threads=None, seed=0, csv=None,
                              device=device, amp=device == "cuda")
    table = benchmark(args)
    out = []
    for row in table.iter_rows(named=True):
        eff = row[f"efficiency_b{batch}"]
        goal = row["step"] == 14
        out.append(measure(f"pruned {row['arch']} {row['stream']} step {row['step']} latency/FLOPs speedup b{batch}",
                           round(eff, 3), "ratio", ">= 0.8" if goal else None,
                           (eff >= 0.8) if goal and not dry else None))
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
    return [measure(f"flow {k} {w}x{h}", round(v, 1), "pairs/s") for k, v in rates.items()]


def step_sweep(dry: bool, work: Path) -> list[dict]:
    """The demo sweep end to end (on the GPU; in a dry run only its data and train stages,
    1 run, 1 epoch), with the time of each stage."""
    import yaml
    cfg = yaml.safe_load((ROOT / "ray_configs" / "demo.yaml").read_text())
    cfg["experiment"]["root"] = str(work / "sweep")
    if dry:
        cfg["train"].update(runs=1, epochs=1)
        cfg["data"]["synthetic"].update(groups=3, clips=2)
        cfg["stages"] = ["data", "train"]
    else:
        cfg["train"]["channels_last"] = True
    path = work / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out, total = [], time.perf_counter()
    for stage in cfg["stages"]:
        start = time.perf_counter()
        _run_bench("training.sweep", ["--config", str(path), "--stages", stage])
        out.append(measure(f"sweep stage {stage}", round(time.perf_counter() - start, 1), "s"))
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
    if dry:
        cmd.append("--dry-run")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    # its own process group, so that a step over its cap is stopped with everything it started
    child = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        _, stderr = child.communicate(timeout=cap)
        error = None if child.returncode == 0 else (stderr.strip().splitlines() or [f"exit {child.returncode}"])[-1]
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        error = f"time cap of {cap:.0f} s exceeded"
    seconds = round(time.perf_counter() - start, 1)
    if error is None and result.exists():
        rows = json.loads(result.read_text())
    else:
        rows = [measure(name, None, None, error=error or "no result written")]
    print(f"{name:12s} {seconds:7.1f} s  {'FAILED: ' + error if error else 'ok'}", flush=True)
    return rows + [measure(f"step {name} time", seconds, "s")]


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
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/gpu_check"), help="where gpu_check.json/.md go")
    p.add_argument("--dry-run", action="store_true", help="every step on the CPU with tiny sizes")
    p.add_argument("--steps", nargs="+", choices=list(STEP_FUNCTIONS), default=list(STEPS),
                   help="steps to run (default: all; 'fail' always fails, to test the summary)")
    p.add_argument("--step", choices=list(STEP_FUNCTIONS), help=argparse.SUPPRESS)  # internal: one step
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.step:  # child: run one step, write its measures
        work = args.result.parent / args.step  # beside the other steps' folders: shared data in ../data
        work.mkdir(exist_ok=True)
        rows = STEP_FUNCTIONS[args.step](args.dry_run, work)
        args.result.write_text(json.dumps(rows))
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
        for name in args.steps:
            cap = STEPS.get(name, (30, 30))[1 if args.dry_run else 0]
            rows += run_step(name, args.dry_run, cap, Path(work))
    import torch
    header = (f"# GPU check{' (dry run on the CPU)' if args.dry_run else ''}: torch {torch.__version__}, "
              f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}")
    write_summary(rows, args.out, header)
    print(f"summary: {args.out / 'gpu_check.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
