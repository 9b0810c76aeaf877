"""The GPU validation kit: wheelhouse split/receive/join/verify on real small files, argument
errors of both scripts, and the driver's dry run (every step on the CPU, a failing step included)."""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WHEELHOUSE = ROOT / "scripts" / "wheelhouse.sh"
GPU_CHECK = ROOT / "scripts" / "gpu_check.sh"


def sh(script: Path, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable, **(env or {})}, cwd=ROOT)


@pytest.fixture
def wheels(tmp_path) -> tuple[Path, dict[str, bytes]]:
    """Three fake wheels of 10, 2500 and 7000 bytes, split into 1000-byte parts."""
    house = tmp_path / "house"
    house.mkdir()
    rng = __import__("random").Random(0)
    content = {f"pkg{n}-1.0-py3-none-any.whl": rng.randbytes(size) for n, size in enumerate([10, 2500, 7000])}
    for name, data in content.items():
        (house / name).write_bytes(data)
    run = sh(WHEELHOUSE, "--split", house, env={"PART_BYTES": "1000"})
    assert run.returncode == 0, run.stderr
    return house, content


def test_split_then_receive_in_transfers_joins_identical_wheels(wheels, tmp_path):
    house, content = wheels
    names = sorted(p.name for p in house.iterdir())
    assert "pkg0-1.0-py3-none-any.whl" in names  # under the limit: kept whole
    assert "pkg2-1.0-py3-none-any.whl" not in names and "pkg2-1.0-py3-none-any.whl.part06" in names
    assert all(p.stat().st_size <= 1000 for p in house.glob("*.part*"))
    sums = (house / "SHA256SUMS").read_text()
    assert sums.count(".part") == 3 + 7 and all(n in sums for n in content)

    # three transfers (SHA256SUMS with the first), each moved into the store at once
    store = tmp_path / "store"
    files = sorted(house.iterdir(), key=lambda p: p.name != "SHA256SUMS")
    for chunk in (files[:4], files[4:9], files[9:]):
        transfer = tmp_path / "transfer"
        transfer.mkdir()
        for f in chunk:
            shutil.move(f, transfer / f.name)
        run = sh(GPU_CHECK, "--receive", transfer, store)
        assert run.returncode == 0, run.stderr
        assert not list(transfer.iterdir())
        transfer.rmdir()
    run = sh(GPU_CHECK, "--verify", store)
    assert run.returncode == 0, run.stderr
    assert {p.name: p.read_bytes() for p in store.glob("*.whl")} == content
    assert not list(store.glob("*.part*"))


def test_corrupt_part_is_refused_on_receipt(wheels, tmp_path):
    house, _ = wheels
    part = house / "pkg1-1.0-py3-none-any.whl.part01"
    data = bytearray(part.read_bytes())
    data[10] ^= 0xFF
    part.write_bytes(bytes(data))
    run = sh(GPU_CHECK, "--receive", house, tmp_path / "store")
    assert run.returncode == 1
    assert "corrupt part" in run.stderr and "pkg1-1.0-py3-none-any.whl.part01" in run.stderr


def test_missing_or_corrupt_part_or_wheel_fails_verification_by_name(wheels, tmp_path):
    house, _ = wheels
    (house / "pkg2-1.0-py3-none-any.whl.part03").unlink()
    part = house / "pkg1-1.0-py3-none-any.whl.part02"
    part.write_bytes(part.read_bytes()[:-1])  # truncated in transfer
    (house / "pkg0-1.0-py3-none-any.whl").unlink()
    run = sh(GPU_CHECK, "--verify", house)
    assert run.returncode == 1
    assert "missing part" in run.stderr and "pkg2-1.0-py3-none-any.whl.part03" in run.stderr
    assert "corrupt part" in run.stderr and "pkg1-1.0-py3-none-any.whl.part02" in run.stderr
    assert not list(house.glob("*.whl"))  # nothing joined from bad parts


def test_missing_whole_wheel_fails_verification(wheels):
    house, _ = wheels
    (house / "pkg0-1.0-py3-none-any.whl").unlink()
    run = sh(GPU_CHECK, "--verify", house)
    assert run.returncode == 1
    assert "missing wheel" in run.stderr and "pkg0-1.0-py3-none-any.whl" in run.stderr


def test_default_parts_are_at_most_60_mib_and_join_back(tmp_path):
    """The real default PART_BYTES: a wheel of 60 MiB + 1 byte becomes two parts, the first
    exactly 60 MiB; SHA256SUMS lists both; joined back it is the same file."""
    house = tmp_path / "house"
    house.mkdir()
    big = house / "big-1.0-py3-none-any.whl"
    data = os.urandom(1 << 16) * 960 + b"x"  # 60 MiB + 1
    big.write_bytes(data)
    run = sh(WHEELHOUSE, "--split", house)
    assert run.returncode == 0, run.stderr
    parts = sorted(house.glob("big-*.part*"))
    assert [p.stat().st_size for p in parts] == [60 * 2**20, 1] and not big.exists()
    sums = dict(reversed(line.split("  ")) for line in (house / "SHA256SUMS").read_text().splitlines())
    assert sums[big.name] == hashlib.sha256(data).hexdigest() and set(sums) == {big.name, *(p.name for p in parts)}
    run = sh(GPU_CHECK, "--verify", house)
    assert run.returncode == 0, run.stderr
    assert big.read_bytes() == data and not list(house.glob("*.part*"))


@pytest.mark.parametrize("script, args, env, message", [
    (WHEELHOUSE, [], {}, "usage"),
    (WHEELHOUSE, ["a", "b"], {}, "usage"),
    (WHEELHOUSE, ["--split", "/nonexistent/house"], {}, "no such folder"),
    (WHEELHOUSE, ["--split", "x"], {"PART_BYTES": "60M"}, "PART_BYTES must be a positive whole number"),
    (GPU_CHECK, ["--bogus"], {}, "unknown argument '--bogus'"),
    (GPU_CHECK, ["--receive", "only-one"], {}, "usage: --receive PARTS_DIR STORE"),
    (GPU_CHECK, ["--receive", "/nonexistent/parts", "store"], {}, "PARTS_DIR /nonexistent/parts is not a folder"),
    (GPU_CHECK, ["--verify", "/nonexistent/store"], {}, "wheelhouse /nonexistent/store is not a folder"),
    (GPU_CHECK, ["--out", "x"], {}, "--wheelhouse STORE is needed"),
    (GPU_CHECK, ["--dry-run"], {"BUDGET_S": "8m"}, "BUDGET_S must be a whole number of seconds, got '8m'"),
])
def test_argument_errors(script, args, env, message):
    run = sh(script, *args, env=env)
    assert run.returncode == 2
    assert message in run.stderr


# The cheapest real step and the failing one here; the whole dry run is the slow test below.
DRY_STEPS = ("cuda_tests", "fail")


@pytest.mark.slow  # the kit's whole dry run, its pytest subprocess included
def test_dry_run_writes_summary_even_when_a_step_fails(tmp_path):
    out = tmp_path / "out"
    run = sh(GPU_CHECK, "--dry-run", "--out", out, "--", "--steps", *DRY_STEPS)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = json.loads((out / "gpu_check.json").read_text())
    assert all(set(r) == {"name", "value", "unit", "goal", "met", "error"} for r in rows)
    by_name = {r["name"]: r for r in rows}
    assert by_name["fail"]["error"] == "RuntimeError: deliberate failure"
    for step in DRY_STEPS:
        assert f"step {step} time" in by_name
    failed = [r for r in rows if r["error"] and r["name"] != "fail"]
    assert not failed, failed
    # without a GPU the cuda-marked tests all skip: they ran, counted
    cuda = by_name["cuda-marked tests passed"]
    counted = re.fullmatch(r"of (\d+) tests \((\d+) skipped\)", cuda["unit"])
    assert cuda["value"] == 0 and counted and counted[1] == counted[2] and int(counted[1]) >= 5, cuda
    assert by_name["DALI tests (mixed on a GPU) collected (dry run)"]["value"] > 20
    table = (out / "gpu_check.md").read_text()
    assert "| name | value | unit | goal | met | error |" in table
    assert "deliberate failure" in table and table.count("\n| ") == len(rows) + 2  # header, rule, rows
    assert (out / "logs" / "fail.log").is_file() and "deliberate failure" in (out / "logs" / "fail.log").read_text()


def test_spent_budget_skips_steps_and_still_writes_the_summary(tmp_path):
    run = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--dry-run", "--budget", "0",
                          "--steps", "loader", "fail", "--out", str(tmp_path)], capture_output=True, text=True,
                         cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [(r["name"], r["error"]) for r in rows] == [
        ("loader", "skipped: the budget of 0 s is spent"), ("fail", "skipped: the budget of 0 s is spent")]


# Every measure the full dry run must report (GPU-only ones, like mixed/cpu ratios, excepted).
DRY_MEASURES = [
    "cuda-marked tests passed", "DALI tests (mixed on a GPU) collected (dry run)",
    "DALI spatial cpu 32px", "DALI temporal cpu 32px",
    *(f"loader-bound ratio {a} {s}" for a in ("resnet18", "resnet50") for s in ("spatial", "temporal")),
    "IROF ours / forward-pass bound", "IROF speed ours / quantus", "IROF forward passes per run",
    *(f"unpruned resnet18 {s} b2" for s in ("spatial", "temporal")),
    *(f"pruned resnet18 {s} {m} {r} b2 {what}" for s in ("spatial", "temporal") for m in ("internal", "residual")
      for r in ("21.72 %", "24.86 %", "43.53 %")
      for what in ("throughput", "latency speedup", "FLOPs speedup", "latency/FLOPs speedup")),
    "flow dis cpu 32x32", "flow raft_small cpu 32x32", "flow raft_small cpu / dis cpu",
    *(f"sweep stage {s}" for s in ("data", "train", "prune", "fuse", "explain", "report")), "sweep end to end",
    *(f"step {s} time" for s in ("cuda_tests", "loader", "boundness", "irof", "pruning", "flow", "sweep")),
]


@pytest.mark.slow
def test_full_dry_run_as_the_readme_says(tmp_path):
    """README: `bash scripts/gpu_check.sh --dry-run --out DIR` runs every step on the CPU."""
    out = tmp_path / "out"
    run = sh(GPU_CHECK, "--dry-run", "--out", out)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = json.loads((out / "gpu_check.json").read_text())
    by_name = {r["name"]: r for r in rows}
    assert [r for r in rows if r["error"]] == []
    assert sorted(set(DRY_MEASURES) - set(by_name)) == []
    assert all(isinstance(by_name[m]["value"], (int, float)) for m in DRY_MEASURES)
    assert all(by_name[m]["value"] >= 0 for m in DRY_MEASURES)
    zero = [m for m in DRY_MEASURES if by_name[m]["value"] <= 0  # a tiny stage may take under 0.5 s
            and m != "cuda-marked tests passed" and not m.startswith("sweep stage")]
    assert zero == [], {m: by_name[m] for m in zero}
    assert len((out / "gpu_check.md").read_text().splitlines()) == len(rows) + 4  # header, blank, head, rule


def one_module_wheel(path: Path) -> None:
    """A real (tiny) wheel: module ``kitprobe``, its dist-info and RECORD."""
    import zipfile
    name = "kitprobe-1.0.dist-info"
    files = {"kitprobe.py": "VALUE = 42\n",
             f"{name}/METADATA": "Metadata-Version: 2.1\nName: kitprobe\nVersion: 1.0\n",
             f"{name}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    with zipfile.ZipFile(path, "w") as z:
        for member, text in files.items():
            z.writestr(member, text)
        z.writestr(f"{name}/RECORD", "".join(f"{m},,\n" for m in [*files, f"{name}/RECORD"]))


def test_gpu_path_verifies_installs_offline_and_runs_the_driver_in_budget(tmp_path):
    """The GPU machine's path, on this CPU: the wheelhouse is verified, installed with
    --no-index into a fresh --system-site-packages venv, and the driver runs there with the
    budget the install left (a GPU step would fail for want of CUDA; the 'fail' step is enough)."""
    store, venv, out = tmp_path / "store", tmp_path / "venv", tmp_path / "out"
    store.mkdir()
    one_module_wheel(store / "kitprobe-1.0-py3-none-any.whl")
    run = sh(WHEELHOUSE, "--split", store)
    assert run.returncode == 0, run.stderr
    run = sh(GPU_CHECK, "--wheelhouse", store, "--out", out, "--", "--steps", "fail",
             env={"VENV": str(venv), "BUDGET_S": "400"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert "1 wheels verified" in run.stdout
    left = int(re.search(r"(\d+) s left for the steps", run.stdout)[1])
    assert 300 < left <= 400
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", "import kitprobe; print(kitprobe.VALUE)"],
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "42", probe.stderr
    rows = json.loads((out / "gpu_check.json").read_text())
    assert rows[0] == {"name": "fail", "value": None, "unit": None, "goal": None, "met": None,
                       "error": "RuntimeError: deliberate failure"}


@pytest.mark.parametrize("dry", [True, False])
def test_sweep_step_configs_pass_validation(dry, tmp_path):
    """The GPU sweep's config never runs in CI: at least it must be one the sweep accepts."""
    from benchmarks.gpu_check import sweep_config
    from core.config import ExperimentConfig
    from pipeline.validation import validate
    cfg = validate(ExperimentConfig.from_dict(sweep_config(dry, tmp_path / "sweep")))
    assert cfg.stages == ["data", "train", "prune", "fuse", "explain", "report"]
    assert (cfg.train.runs, cfg.prune.steps, cfg.model.input_size) == ((1, 1, 32) if dry else (3, 3, 48))
    assert cfg.train.channels_last is not dry and cfg.ray.gpus_per_trial == (None if dry else 0.25)
