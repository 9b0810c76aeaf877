"""The shard format: the one contract between ingest and every reader.

One sample = one clip of one video, stored as four WebDataset components:

- ``rgb.jpg``  the clip's centre frame (RGB JPEG),
- ``flow.jpg`` the 10 x-fields then the 10 y-fields of consecutive-frame optical flow,
  quantised to uint8 with one fixed bound and tiled vertically into one grayscale JPEG,
  so a decoded (20*H, W[, 1]) image reshapes to (20, H, W) without copying,
- ``cls``      the 0-based class index as ASCII,
- ``json``     :class:`SampleMeta` (video id, clip index, frames, source fps/size, flow method,
  its options (e.g. the DIS preset) and bound, format version).

Nothing in here imports from the rest of the project.
"""
from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
from PIL import Image

FORMAT_VERSION = 1
DEFAULT_FLOW_BOUND = 20.0  # pixels per frame
STACK = 10  # flow fields per sample and direction
CHANNELS = 2 * STACK  # temporal-stream input channels
DEFAULT_TEST_CLIPS = 25
COMPONENTS = ("rgb.jpg", "flow.jpg", "cls", "json")
KEY_SEPARATOR = "__"
UCF101_SIZE = (320, 240)  # the source frame size of UCF101's videos
# Bytes of one stored clip (RGB jpg + 20-field flow jpg + cls + json, tar headers, index line)
# ≈ FIXED + PER_PIXEL × frame pixels: a line through docs/ARCHITECTURE.md's measured sizes of
# real clips (DIS fast): 96 KiB at 341×256, 11 KiB at 85×64 (89 KiB measured at 320×240, 85 here).
CLIP_FIXED_BYTES = 5.4 * 1024
CLIP_BYTES_PER_PIXEL = 1.06


class ShardFormatError(ValueError):
    """A shard or sample that does not follow this format (or another version of it)."""


def stored_frame_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """The frame size a ``width`` × ``height`` source is stored at (resized to ``short_side``)."""
    if not short_side:
        return width, height
    scale = short_side / min(width, height)
    return round(width * scale), round(height * scale)


def clip_bytes(width: int, height: int, short_side: int | None = None) -> float:
    """Estimated bytes of one stored clip of a ``width`` × ``height`` source: the one estimate
    the ingest's plan and preflight and the sweep's cost plan share."""
    width, height = stored_frame_size(width, height, short_side)
    return CLIP_FIXED_BYTES + CLIP_BYTES_PER_PIXEL * width * height


def sample_key(video_id: str, clip: int) -> str:
    if KEY_SEPARATOR in video_id or "." in video_id:
        raise ValueError(f"video id {video_id!r} may not contain {KEY_SEPARATOR!r} or '.'")
    return f"{video_id}{KEY_SEPARATOR}{clip:03d}"


def parse_key(key: str) -> tuple[str, int]:
    video_id, sep, clip = key.rpartition(KEY_SEPARATOR)
    if not sep or not clip.isdigit():
        raise ShardFormatError(f"sample key {key!r} is not '<video_id>__<clip:03d>'")
    return video_id, int(clip)


# --- flow quantisation -------------------------------------------------------------------

def quantise_flow(flow: np.ndarray, bound: float = DEFAULT_FLOW_BOUND) -> np.ndarray:
    """q = round(clip(f, -B, B) * 127.5 / B + 127.5) as uint8. Never per-image min-max.

    Computed as clip(f * 127.5 / B + 127.5, 0, 255) in float32, in place: the same bytes,
    one temporary instead of four (ingest quantises every field it computes)."""
    scaled = np.multiply(flow, np.float32(127.5 / bound), dtype=np.float32)
    scaled += np.float32(127.5)
    np.clip(scaled, 0, 255, out=scaled)
    return np.rint(scaled, out=scaled).astype(np.uint8)


def dequantise_flow(q: np.ndarray, bound: float = DEFAULT_FLOW_BOUND) -> np.ndarray:
    """Inverse of :func:`quantise_flow` (to within half a step, bound/255 px)."""
    return (np.asarray(q, dtype=np.float32) - 127.5) * (bound / 127.5)


def quantisation_step(bound: float = DEFAULT_FLOW_BOUND) -> float:
    return bound / 127.5


def tile_flow(fields: np.ndarray, bound: float = DEFAULT_FLOW_BOUND) -> np.ndarray:
    """(STACK, H, W, 2) float flow → (2*STACK*H, W) uint8: x fields 0..9, then y fields 0..9."""
    fields = np.asarray(fields)
    if fields.ndim != 4 or fields.shape[0] != STACK or fields.shape[-1] != 2:
        raise ValueError(f"expected flow of shape ({STACK}, H, W, 2), got {fields.shape}")
    _, h, w, _ = fields.shape
    planes = np.concatenate([fields[..., 0], fields[..., 1]], axis=0)  # (20, H, W)
    return quantise_flow(planes, bound).reshape(CHANNELS * h, w)


def untile_flow(tiled: np.ndarray) -> np.ndarray:
    """(20*H, W) or (20*H, W, 1) → (20, H, W): a view, no copy."""
    if tiled.ndim == 3:
        tiled = tiled[..., 0]
    rows, w = tiled.shape
    if rows % CHANNELS:
        raise ShardFormatError(f"flow image height {rows} is not a multiple of {CHANNELS}")
    return tiled.reshape(CHANNELS, rows // CHANNELS, w)


# --- samples ------------------------------------------------------------------------------

@dataclass
class SampleMeta:
    video: str
    clip: int
    label: int
    class_name: str
    frames: list[int]  # the STACK+1 source frame indices the flow fields were computed between
    centre_frame: int  # source index of the RGB frame
    fps: float
    width: int  # source frame size (before any resize)
    height: int
    flow_method: str
    flow_bound: float = DEFAULT_FLOW_BOUND
    flow_options: dict = field(default_factory=dict)  # the backend's settings, e.g. {"preset": "fast"}
    clamped: bool = False  # the video was too short: indices were clamped and repeated
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> "SampleMeta":
        data = json.loads(raw)
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ShardFormatError(f"unknown metadata keys {sorted(unknown)}")
        return cls(**data)


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """uint8 (H, W, 3) RGB or (H, W) grayscale → JPEG bytes (4:4:4 for colour)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def decode_jpeg(data: bytes, mode: str) -> np.ndarray:
    """JPEG bytes → uint8 array (mode 'RGB' → (H, W, 3), 'L' → (H, W))."""
    with Image.open(io.BytesIO(data)) as img:
        if img.format != "JPEG":
            raise ShardFormatError(f"expected a JPEG, got {img.format}")
        return np.asarray(img.convert(mode))


def encode_sample(rgb: np.ndarray, flow_tiled: np.ndarray, meta: SampleMeta,
                  rgb_quality: int = 90, flow_quality: int = 95) -> dict:
    """A WebDataset sample dict (``__key__`` plus the four components as bytes)."""
    if flow_tiled.dtype != np.uint8 or flow_tiled.ndim != 2:
        raise ValueError("flow_tiled must be the uint8 (20*H, W) output of tile_flow")
    return {
        "__key__": sample_key(meta.video, meta.clip),
        "rgb.jpg": encode_jpeg(rgb, rgb_quality),
        "flow.jpg": encode_jpeg(flow_tiled, flow_quality),
        "cls": str(meta.label).encode(),
        "json": meta.to_json(),
    }


@dataclass
class DecodedSample:
    key: str
    rgb: np.ndarray  # uint8 (H, W, 3)
    flow_q: np.ndarray  # uint8 (20, H, W), quantised
    label: int
    meta: SampleMeta

    @property
    def flow(self) -> np.ndarray:
        """Dequantised float32 (20, H, W) flow in pixels per frame."""
        return dequantise_flow(self.flow_q, self.meta.flow_bound)


def decode_sample(sample: dict, source: str = "?") -> DecodedSample:
    """Decode only the known components; never unpickles anything. ``source`` names the shard."""
    key = sample.get("__key__", "?")
    missing = [c for c in COMPONENTS if c not in sample]
    if missing:
        raise ShardFormatError(f"{source}: sample {key!r} lacks {missing}")
    try:
        meta = SampleMeta.from_json(sample["json"])
        check_meta(meta, source=f"{source}: sample {key!r}")
        label = int(bytes(sample["cls"]).decode())
        rgb = decode_jpeg(sample["rgb.jpg"], "RGB")
        flow_q = untile_flow(decode_jpeg(sample["flow.jpg"], "L"))
    except ShardFormatError:
        raise
    except Exception as exc:  # corrupt JPEG, bad JSON, bad label ...
        raise ShardFormatError(f"{source}: sample {key!r} is corrupt: {exc}") from exc
    if label != meta.label:
        raise ShardFormatError(f"{source}: sample {key!r} has cls {label} but metadata label {meta.label}")
    if flow_q.shape[1:] != rgb.shape[:2]:
        raise ShardFormatError(f"{source}: sample {key!r} flow {flow_q.shape} and rgb {rgb.shape} sizes differ")
    return DecodedSample(key=key, rgb=rgb, flow_q=flow_q, label=label, meta=meta)


def check_meta(meta: SampleMeta, *, source: str = "?", flow_bound: float | None = None) -> None:
    """Refuse samples of another format version or (if given) another flow bound."""
    if meta.format_version != FORMAT_VERSION:
        raise ShardFormatError(
            f"{source}: shard format version {meta.format_version}, this code reads version "
            f"{FORMAT_VERSION}; rebuild the shards with this version's ingest.build_shards")
    if flow_bound is not None and abs(meta.flow_bound - flow_bound) > 1e-6:
        raise ShardFormatError(
            f"{source}: flow bound {meta.flow_bound} differs from the configured {flow_bound}")


# --- manifest -----------------------------------------------------------------------------

MANIFEST_NAME = "manifest.parquet"
MANIFEST_SCHEMA = pa.schema([
    ("split", pa.int32()),
    ("subset", pa.string()),  # train | test
    ("video", pa.string()),  # e.g. v_ApplyEyeMakeup_g08_c01
    ("path", pa.string()),  # relative to the videos folder, as in the split list
    ("class_name", pa.string()),
    ("label", pa.int32()),  # 0-based
    ("group", pa.int32()),
    ("frames", pa.int32()),
    ("fps", pa.float32()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("clips", pa.int32()),
    ("clamped", pa.bool_()),
    ("shard", pa.string()),  # relative to the split folder, e.g. train/shard-000003.tar
    ("status", pa.string()),  # ok | failed
    ("error", pa.string()),
    ("flow_method", pa.string()),
    ("flow_bound", pa.float32()),
    ("flow_options", pa.string()),  # JSON of the flow backend's settings, e.g. {"preset": "fast"}
    ("seconds", pa.float32()),
    ("format_version", pa.int32()),
    ("host", pa.string()),  # where the video was ingested (core.node.node_info)
    ("node_id", pa.string()),  # its Ray node id
])
