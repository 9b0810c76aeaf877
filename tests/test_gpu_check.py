"""The GPU validation kit: wheelhouse split/receive/join/verify on real small files, argument
errors of both scripts, and the driver's dry run (every step on the CPU, a failing step included)."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WHEELHOUSE = ROOT / "scripts" / "wheelhouse.sh"
GPU_CHECK = ROOT / "scripts" / "gpu_check.sh"


def sh(script: Path, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=ROOT)


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


def test_missing_part_or_wheel_fails_verification(wheels, tmp_path):
    house, _ = wheels
    (house / "pkg2-1.0-py3-none-any.whl.part03").unlink()
    (house / "pkg0-1.0-py3-none-any.whl").unlink()
    run = sh(GPU_CHECK, "--verify", house)
    assert run.returncode == 1
    assert "checksum mismatch" in run.stderr and "pkg2-1.0-py3-none-any.whl" in run.stderr
    assert "missing wheel" in run.stderr and "pkg0-1.0-py3-none-any.whl" in run.stderr


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
])
def test_argument_errors(script, args, env, message):
    run = sh(script, *args, env=env)
    assert run.returncode == 2
    assert message in run.stderr


# The cheap steps only: the whole dry run took 395 s on the loaded 2-core development machine
# (irof and sweep over their caps there); run it by hand with scripts/gpu_check.sh --dry-run.
DRY_STEPS = ("cuda_tests", "loader", "fail")


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
    names = " ".join(by_name)
    for expected in ("cuda tests collected", "DALI spatial cpu", "DALI temporal cpu"):
        assert expected in names
    table = (out / "gpu_check.md").read_text()
    assert "| name | value | unit | goal | met | error |" in table
    assert "deliberate failure" in table and table.count("\n| ") == len(rows) + 2  # header, rule, rows
