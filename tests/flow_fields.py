"""Frames with a known motion for flow and clip tests: a smooth texture translating by a fixed
number of pixels a frame, and the median flow away from the borders."""
from __future__ import annotations

import cv2
import numpy as np


SHIFT = (3, -2)  # px per frame: right and up


def translating(frames: int, h: int = 64, w: int = 80, shift=SHIFT) -> np.ndarray:
    """A smooth random texture translating by ``shift`` px/frame (windows of a larger image)."""
    rng = np.random.default_rng(0)
    big = cv2.GaussianBlur(rng.uniform(0, 255, (h + 200, w + 200)).astype(np.float32), (0, 0), 2)
    big = cv2.normalize(big, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    out = []
    for t in range(frames):
        x, y = 100 - shift[0] * t, 100 - shift[1] * t  # the content moves by +shift
        out.append(np.repeat(big[y:y + h, x:x + w, None], 3, axis=2))
    return np.stack(out)


def interior_median(flow: np.ndarray) -> np.ndarray:
    return np.median(flow[..., 12:-12, 12:-12, :].reshape(-1, 2), axis=0)
