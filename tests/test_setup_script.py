"""scripts/setup.sh's arguments: an offline wheel folder, --no-index, and errors before pip runs."""
from __future__ import annotations

import os
import subprocess
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
