"""What produced a result: config fingerprint, code version, library versions, device.

Under ``ray job submit`` the working directory has no ``.git``: record the commit at submit
time, ``--runtime-env-json '{"env_vars": {"CROSSROADS_GIT_COMMIT": "'$(git rev-parse HEAD)'"}}'``.
A ``$CROSSROADS_GIT_COMMIT`` that is set wins over the checkout (it is the submitter's word,
and the results store reads it the same way).
"""
from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

GIT_COMMIT_ENV = "CROSSROADS_GIT_COMMIT"

# distribution names whose versions are recorded (absent ones are recorded as null)
PACKAGES = {"torch": "torch", "torchvision": "torchvision", "ray": "ray", "quantus": "quantus",
            "numpy": "numpy", "polars": "polars", "pyarrow": "pyarrow", "opencv": "opencv-python",
            "dali": ("nvidia-dali-cuda130", "nvidia-dali-cuda120", "nvidia-dali-cpu", "nvidia-dali")}


def git_commit() -> str | None:
    """``$CROSSROADS_GIT_COMMIT`` if set, else this checkout's commit (``-dirty`` for local
    changes), else None."""
    if os.environ.get(GIT_COMMIT_ENV):
        return os.environ[GIT_COMMIT_ENV]
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


def _version(names) -> str | None:
    for name in (names,) if isinstance(names, str) else names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def project_version() -> str | None:
    """This checkout's version (``pyproject.toml``, what CHANGELOG.md names), else the installed
    distribution's: an editable install keeps the version it was installed with."""
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    try:
        match = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.MULTILINE)
    except OSError:
        match = None
    return match.group(1) if match else _version("crossroads")


def versions() -> dict[str, str | None]:
    out = {"crossroads": project_version(), "python": platform.python_version()}
    out.update({key: _version(names) for key, names in PACKAGES.items()})
    return out


def cpu_model() -> str | None:
    """The CPU's model name (Linux: /proc/cpuinfo), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def gpu_driver() -> str | None:
    """The NVIDIA driver version (``nvidia-smi``), None without one."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].strip() if out.strip() else None


def device_info() -> dict:
    """Host, CPU and accelerator (model, driver, CUDA)."""
    info = {"host": platform.node(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "cpu_model": cpu_model(), "gpu_driver": gpu_driver()}
    torch = sys.modules.get("torch")
    if torch is None:
        import torch
    info["cuda"] = torch.version.cuda
    info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] \
        if torch.cuda.is_available() else []
    return info
