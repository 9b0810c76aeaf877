"""scripts/setup.sh's arguments: an offline wheel folder, --no-index, and errors before pip runs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETUP = ROOT / "scripts" / "setup.sh"


def setup(*args, **env):
    environ = {k: v for k, v in os.environ.items() if k != "PIP_FIND_LINKS"} | env
    return subprocess.run(["bash", str(SETUP), *args], capture_output=True, text=True, env=environ, timeout=60)


def test_setup_script_parses():
    assert subprocess.run(["bash", "-n", str(SETUP)]).returncode == 0


def test_offline_install_uses_the_wheelhouse_and_no_index(tmp_path):
    done = setup("--wheelhouse", str(tmp_path), "--no-index", "--dry-run")
    assert done.returncode == 0, done.stderr
    pip = [line for line in done.stdout.splitlines() if " -m pip install" in line]
    assert len(pip) == 2 and "--upgrade pip" not in done.stdout  # offline: the venv keeps its pip
    assert all(f"--find-links {tmp_path}" in line and "--no-index" in line for line in pip)
    assert "-e .[test]" in pip[-1]


def test_plain_setup_is_unchanged():
    done = setup("--dry-run")
    assert done.returncode == 0, done.stderr
    assert "--upgrade pip" in done.stdout and "--no-index" not in done.stdout and "--find-links" not in done.stdout


def test_bad_arguments_exit_2_before_pip(tmp_path):
    for args, message in [(["--no-index"], "--no-index needs wheels"),
                          (["--wheelhouse", str(tmp_path / "missing")], "needs an existing folder"),
                          (["--wheelhous", "x"], "unknown argument '--wheelhous'")]:
        done = setup(*args, "--dry-run")
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)
        assert "pip" not in done.stdout
    assert setup("--no-index", "--dry-run", PIP_FIND_LINKS=str(tmp_path)).returncode == 0


def test_floors_script_pins_the_lowest_allowed_versions():
    import re
    import tomllib
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = {re.match(r"[\w-]+", d).group(0): re.search(r">=\s*([\d.]+)", d).group(1) for d in deps
              if re.match(r"(polars|pyarrow|ray|matplotlib|statsmodels)\b", d)}
    assert len(floors) == 5
    printed = subprocess.run(["bash", str(ROOT / "scripts" / "floors.sh"), "--print"], capture_output=True,
                             text=True, timeout=60, env={**os.environ, "PYTHON": sys.executable})
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.split()
    for name, version in floors.items():
        assert any(re.fullmatch(rf"{name}(\[[^]]*\])?=={re.escape(version)}", line) for line in lines), name
    assert "torch" not in printed.stdout and "pytest>=8" in lines  # torch comes from the local wheels
    bad = subprocess.run(["bash", str(ROOT / "scripts" / "floors.sh"), "--nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown argument '--nope'" in bad.stderr
