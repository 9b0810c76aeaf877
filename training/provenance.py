"""What produced a result: config fingerprint, code version, library versions, device.

Under ``ray job submit`` the working directory has no ``.git``: set
``CROSSROADS_GIT_COMMIT=$(git rev-parse HEAD)`` in the job's environment
(``--runtime-env-json '{"env_vars": {"CROSSROADS_GIT_COMMIT": "..."}}'``) and it is used
when no checkout is found.
"""
from __future__ import annotations

import os
import platform
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
    """This checkout's commit (``-dirty`` for local changes), else ``$CROSSROADS_GIT_COMMIT``."""
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get(GIT_COMMIT_ENV) or None
    return commit + ("-dirty" if dirty else "")


def _version(names) -> str | None:
    for name in (names,) if isinstance(names, str) else names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def versions() -> dict[str, str | None]:
    out = {"python": platform.python_version()}
    out.update({key: _version(names) for key, names in PACKAGES.items()})
    return out


def device_info() -> dict:
    """Host and accelerator, without initialising CUDA when torch is not yet imported."""
    info = {"host": platform.node(), "platform": platform.platform(), "cpus": os.cpu_count()}
    torch = sys.modules.get("torch")
    if torch is None:
        import torch
    info["cuda"] = torch.version.cuda
    info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] \
        if torch.cuda.is_available() else []
    return info
