"""Optical flow between consecutive frames, several backends behind one interface.

``get_backend(name, **options)`` returns an object with ``name``, ``options`` (the settings it
runs with, defaults filled in: recorded in the shard metadata and manifest), ``luma`` (True: it compares
grayscale frames, so ``(T, H, W)`` luma is all it needs; RGB ``(T, H, W, 3)`` works too) and
``fields(frames, starts)``, which yields the float32 (H, W, 2) flow from ``frames[i]`` to
``frames[i + 1]`` for each ``i`` in ``starts`` in turn (x then y, pixels per frame, positive =
right/down); ``pairs(frames, starts)`` stacks them into (len(starts), H, W, 2).

- ``dis`` (default): OpenCV DIS (preset ``fast`` unless told), CPU;
- ``farneback``: OpenCV Farnebäck, CPU;
- ``tvl1``: OpenCV TV-L1, needs ``cv2.optflow`` from opencv-contrib-python;
- ``raft_small`` / ``raft_large``: torchvision RAFT, batched, on the GPU when there is one.
  Weights come from torchvision's cache (``torch.hub`` checkpoints folder) or a local
  ``state_dict`` file (``weights=PATH``); nothing is downloaded and random weights are never used.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

DIS_PRESETS = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
               "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
               "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}
RAFT_MIN_SIZE = 128  # torchvision RAFT's correlation pyramid needs inputs this large
BACKENDS = ("dis", "farneback", "tvl1", "raft_small", "raft_large")


class FlowUnavailable(RuntimeError):
    """The backend cannot run here (missing package or weights); the message says what to do."""


class _Backend:
    name = ""
    luma = True
    options: dict = {}  # the effective settings (defaults filled in), JSON-serialisable

    def fields(self, frames: np.ndarray, starts: Sequence[int]) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def pairs(self, frames: np.ndarray, starts: Sequence[int]) -> np.ndarray:
        out = np.empty((len(starts), *frames.shape[1:3], 2), np.float32)
        for n, field in enumerate(self.fields(frames, starts)):
            out[n] = field
        return out


class _GrayBackend(_Backend):
    """CPU backends that compare grayscale images; RGB frames are converted once each."""

    def _calc(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def fields(self, frames: np.ndarray, starts: Sequence[int]) -> Iterator[np.ndarray]:
        gray: dict[int, np.ndarray] = {}

        def grey(i: int) -> np.ndarray:
            if i not in gray:
                gray[i] = frames[i] if frames.ndim == 3 else cv2.cvtColor(frames[i], cv2.COLOR_RGB2GRAY)
            return gray[i]

        for i in starts:
            yield self._calc(grey(i), grey(i + 1))


class DisFlow(_GrayBackend):
    name = "dis"

    def __init__(self, preset: str = "fast"):
        if preset not in DIS_PRESETS:
            raise ValueError(f"DIS preset must be one of {sorted(DIS_PRESETS)}, got {preset!r}")
        self._dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])
        self.options = {"preset": preset}

    def _calc(self, a, b):
        return self._dis.calc(a, b, None)


class FarnebackFlow(_GrayBackend):
    name = "farneback"
    options = {"pyr_scale": 0.5, "levels": 3, "winsize": 15, "iterations": 3, "poly_n": 5,
               "poly_sigma": 1.2, "flags": 0}

    def _calc(self, a, b):
        return cv2.calcOpticalFlowFarneback(a, b, None, **self.options)


class Tvl1Flow(_GrayBackend):
    name = "tvl1"

    def __init__(self):
        if problem := unavailable("tvl1"):
            raise FlowUnavailable(problem)
        self._tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
        self.options = {"implementation": "cv2.optflow.DualTVL1OpticalFlow", "opencv": cv2.__version__}

    def _calc(self, a, b):
        return self._tvl1.calc(a, b, None)


class RaftFlow(_Backend):
    """torchvision RAFT on RGB frames; frames are padded (edge pixels repeated) to a multiple
    of 8 and at least RAFT_MIN_SIZE, and the flow is cropped back."""
    luma = False

    def __init__(self, name: str = "raft_small", *, weights: str | Path | None = None,
                 device: str | None = None, batch_size: int = 8, updates: int = 12):
        import torch
        from torchvision.models import optical_flow

        self.name, self.batch_size, self.updates = name, batch_size, updates
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model = getattr(optical_flow, name)(weights=None)
        model.load_state_dict(_raft_state_dict(name, weights))
        self.options = {"weights": str(weights) if weights else "torchvision DEFAULT", "updates": updates}
        self.model = model.eval().to(self.device)

    def fields(self, frames: np.ndarray, starts: Sequence[int]) -> Iterator[np.ndarray]:
        import torch
        import torch.nn.functional as F

        h, w = frames.shape[1:3]
        pad = (0, max(RAFT_MIN_SIZE, w + -w % 8) - w, 0, max(RAFT_MIN_SIZE, h + -h % 8) - h)
        for lo in range(0, len(starts), self.batch_size):
            idx = np.asarray(starts[lo:lo + self.batch_size])

            def batch(indices):
                x = torch.from_numpy(frames[indices]).to(self.device).permute(0, 3, 1, 2).float()
                return F.pad(x / 127.5 - 1.0, pad, mode="replicate")

            with torch.inference_mode():
                flow = self.model(batch(idx), batch(idx + 1), num_flow_updates=self.updates)[-1]
            yield from flow[:, :, :h, :w].permute(0, 2, 3, 1).cpu().numpy()


def _raft_state_dict(name: str, weights: str | Path | None) -> dict:
    import torch
    from torchvision.models import optical_flow

    if problem := unavailable(name, weights=weights):
        raise FlowUnavailable(problem)
    return torch.load(raft_weights_path(name, weights), map_location="cpu", weights_only=True)


def raft_weights_path(name: str, weights: str | Path | None = None) -> Path:
    """The state_dict a RAFT backend loads: ``weights``, else torchvision's cached DEFAULT file."""
    if weights is not None:
        return Path(weights)
    import torch
    from torchvision.models import optical_flow
    enum = getattr(optical_flow, {"raft_small": "Raft_Small_Weights", "raft_large": "Raft_Large_Weights"}[name]).DEFAULT
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name


def unavailable(name: str, **options) -> str | None:
    """Why backend ``name`` cannot run here (one line saying what to do), else None; builds
    nothing, so a sweep checks it before any work (pipeline.preflight)."""
    if name == "tvl1" and not hasattr(cv2, "optflow"):
        return (f"flow 'tvl1' needs cv2.optflow, which this OpenCV ({cv2.__version__}) lacks: install "
                "opencv-contrib-python (pip uninstall opencv-python && pip install "
                "opencv-contrib-python) or use flow dis")
    if name in ("raft_small", "raft_large"):
        weights = options.get("weights")
        path = raft_weights_path(name, weights)
        if weights is None and not path.is_file():
            return (f"flow {name!r}: no weights in torchvision's cache ({path}) and no local file "
                    f"given; download them where there is internet (python -c \"from torchvision."
                    f"models.optical_flow import {name}; {name}(weights='DEFAULT')\") or pass a "
                    f"state_dict file as weights=PATH; random weights are never used")
        if not path.is_file():
            return f"flow {name!r}: weights file {path} not found"
    return None


def get_backend(name: str = "dis", **options):
    """A flow backend by name (see the module docstring); options go to its constructor."""
    if name == "dis":
        return DisFlow(**options)
    if name == "farneback":
        return FarnebackFlow(**options)
    if name == "tvl1":
        return Tvl1Flow(**options)
    if name in ("raft_small", "raft_large"):
        return RaftFlow(name, **options)
    raise ValueError(f"unknown flow method {name!r}; choose one of {BACKENDS}")
