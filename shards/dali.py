"""DALI loaders: shards → PyTorch batches for the spatial and the temporal stream.

One pipeline per (stream, train/eval). JPEG decoding runs on the GPU (``device="mixed"``)
when CUDA is there and on the CPU (``device_id=None``) otherwise; every later op follows
its input's device, so both modes run the same graph.

- spatial: decode ``rgb.jpg`` → (train) random crop window, resized to the input size
  (``crop_mode="random"``: an input-size crop, no resize), random horizontal flip →
  ImageNet normalisation → float CHW.
- temporal: decode ``flow.jpg`` as one grayscale image (20·H, W, 1) (only the crop's columns
  when the crop is not resized) → reshape (a view) to
  (20, H, W) → (train) one crop window and one flip for all 20 channels → dequantise with the
  flow bound → negate the x fields (channels 0–9) of flipped samples → scale displacements
  by the resize factor, so flow stays in pixels of the model's input, divided by ``flow_scale``
  (1 = pixels) → optional per-field
  mean-displacement subtraction. Dequantisation, sign and scale are one crop_mirror_normalize.
- eval: centre crop of the input size from the stored frame, no resize (ten-crop optional:
  4 corners + centre, each also flipped). Every sample exactly once, partial last batch kept.

Video id and clip index come from the ``json`` component and the label from ``cls``, parsed
on the host per batch.
"""
from __future__ import annotations

import io
import dataclasses
import json
import math
import shutil
import uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.pipeline import DataNode
from nvidia.dali import math as dmath
from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

from shards.format import (CHANNELS, DEFAULT_FLOW_BOUND, SampleMeta, ShardFormatError, check_meta,
                     decode_sample)
from shards import scratch
from shards.sampling import draw_clips, epoch_index_lines, even_clips, stored_clips
from shards.tarfiles import INDEX_VERSION, check_shard_files, index_path, iter_shard, read_index_samples

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STREAMS = {"spatial": "rgb.jpg", "temporal": "flow.jpg"}
CROP_MODES = ("corner", "random_resized", "random")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Ten-crop positions (x, y) relative to the free space: 4 corners, then the centre.
FIVE_POSITIONS = ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0), (0.5, 0.5))
READER = "reader"


@dataclass(frozen=True)
class LoaderConfig:
    stream: str = "spatial"  # spatial | temporal
    train: bool = False
    batch_size: int = 32
    input_size: int = 224
    # Train crop window, resized to input_size. corner: multi-scale corner crop of two-stream
    # practice, each side a fraction (from crop_scales, neighbouring scales only) of the short
    # side, placed at a corner or the centre. random_resized: area fraction in [min², max²] of
    # crop_scales, aspect ratio in [3/4, 4/3], anywhere. random: an input_size crop anywhere,
    # no resize (Simonyan & Zisserman; by far the fastest on the CPU).
    crop_mode: str = "corner"
    crop_scales: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66)
    # Train: random horizontal flip (x fields negated). Turn off only for data whose classes
    # are not mirror-symmetric (e.g. "moves left" vs "moves right").
    flip: bool = True
    ten_crop: bool = False  # eval only: x is (N, 10, C, S, S)
    mean_subtraction: bool = False  # temporal: subtract each field's mean displacement
    flow_bound: float = DEFAULT_FLOW_BOUND
    # temporal: displacements are divided by this (1 = pixels; the flow bound gives about
    # ±1, as TSN feeds flow); folded into the same crop_mirror_normalize
    flow_scale: float = 1.0
    dtype: str = "float32"  # float32 | float16 | bfloat16
    threads: int = 2
    seed: int = 0
    shard_id: int = 0
    num_shards: int = 1
    device: str = "auto"  # auto | cpu | gpu
    shuffle_buffer: int = 1024  # train: samples in the reader's shuffling buffer
    # train: each epoch reads this many of each video's stored clips, drawn per (seed, epoch,
    # video) TSN-style (shards.sampling); eval: this many evenly spaced ones, the same every pass
    # (shards.sampling.even_clips: a light evaluation); None = every stored clip every epoch
    clips_per_video: int | None = None

    def __post_init__(self):
        problems = []
        if self.stream not in STREAMS:
            problems.append(f"stream {self.stream!r} is not one of {sorted(STREAMS)}")
        if self.crop_mode not in CROP_MODES:
            problems.append(f"crop_mode {self.crop_mode!r} is not one of {CROP_MODES}")
        if not self.crop_scales or not all(0 < s <= 1 for s in self.crop_scales):
            problems.append(f"crop_scales {self.crop_scales} must be fractions in (0, 1]")
        if self.dtype not in DTYPES:
            problems.append(f"dtype {self.dtype!r} is not one of {sorted(DTYPES)}")
        if self.device not in ("auto", "cpu", "gpu"):
            problems.append(f"device {self.device!r} is not auto, cpu or gpu")
        if not 0 <= self.shard_id < self.num_shards:
            problems.append(f"shard_id {self.shard_id} is not in [0, num_shards={self.num_shards})")
        if self.batch_size < 1 or self.input_size < 1 or self.threads < 1:
            problems.append("batch_size, input_size and threads must be positive")
        if not self.flow_scale > 0:
            problems.append(f"flow_scale {self.flow_scale} must be positive")
        if self.ten_crop and self.train:
            problems.append("ten_crop is an eval transform (train=False)")
        if self.clips_per_video is not None and self.clips_per_video < 1:
            problems.append(f"clips_per_video {self.clips_per_video} must be None or positive")
        if problems:
            raise ValueError("LoaderConfig: " + "; ".join(problems))
        object.__setattr__(self, "crop_scales", tuple(float(s) for s in self.crop_scales))

    @property
    def channels(self) -> int:
        return 3 if self.stream == "spatial" else CHANNELS


def shard_paths(shards: str | Path | list) -> list[Path]:
    """A split folder's subset (``…/split1/train``, every ``*.tar`` in it) or a list of tars.

    A tar without its ``.idx`` is not skipped: the loader refuses it (``check_shard``), naming it.
    """
    if isinstance(shards, (str, Path)):
        folder = Path(shards)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such shard folder")
        paths = sorted(folder.glob("*.tar"))
        if not paths:
            raise FileNotFoundError(f"{folder}: no complete shards (no *.tar in it)")
        return paths
    paths = [Path(p) for p in shards]
    if not paths:
        raise ValueError("make_loader: empty shard list")
    return paths


def _read_member(tar_path: Path, entry: dict, ext: str) -> bytes:
    offset, size = entry[ext]
    with open(tar_path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def check_shard(tar_path: Path, cfg: "LoaderConfig") -> int:
    """Refuse a shard of another format version or flow bound, or with frames smaller than an
    unresized crop (eval, crop_mode="random") would take; returns its sample count.

    Ingest writes one version, bound and frame size per shard, so its first sample speaks for it.
    A missing tar or index, a truncated tar or a sample missing a component is refused first
    (``tarfiles.check_shard_files``: the message names shard, sample and the fix).
    """
    entries = [parts for _, parts in check_shard_files(tar_path)]
    if not entries or not {"json", "rgb.jpg"} <= entries[0].keys():
        raise ShardFormatError(f"{tar_path}: index lists no samples with json and rgb.jpg components")
    try:
        meta = SampleMeta.from_json(_read_member(tar_path, entries[0], "json"))
        with Image.open(io.BytesIO(_read_member(tar_path, entries[0], "rgb.jpg"))) as image:
            width, height = image.size  # reads the header only
    except (ValueError, TypeError, OSError) as exc:
        raise ShardFormatError(f"{tar_path}: unreadable first sample: {exc}") from exc
    check_meta(meta, source=str(tar_path), flow_bound=cfg.flow_bound)
    if (not cfg.train or cfg.crop_mode == "random") and min(width, height) < cfg.input_size:
        raise ValueError(f"{tar_path}: frames are {width}x{height}, smaller than input_size "
                         f"{cfg.input_size} (eval and crop_mode='random' crop without resizing)")
    return len(entries)


def _index_lines(tar_path: Path) -> list[tuple[str, str]]:
    """The shard's ``.idx`` lines after the header, each with its sample key."""
    lines = index_path(tar_path).read_text().splitlines()[1:]
    return [(key, line) for (key, _), line in zip(read_index_samples(tar_path), lines)]


def find_corrupt_sample(paths: list[Path]) -> ShardFormatError | None:
    """The first sample that does not decode, as an error naming its shard and key."""
    for path in paths:
        try:
            for raw in iter_shard(path):
                decode_sample(raw, source=str(path))
        except ShardFormatError as exc:
            return exc
    return None


# --- pipeline pieces ----------------------------------------------------------------------

def _crop_window(cfg: LoaderConfig, height, width):
    """Per-sample random crop window (y0, x0, crop_h, crop_w) in pixels, as DALI nodes."""
    scales = cfg.crop_scales
    if cfg.crop_mode == "corner":
        pairs = [(sw, sh) for i, sw in enumerate(scales) for j, sh in enumerate(scales) if abs(i - j) <= 1]
        pick = fn.random.choice(len(pairs))
        keys = list(range(len(pairs)))
        side = dmath.min(height, width)
        crop_w = side * fn.lookup_table(pick, keys=keys, values=[p[0] for p in pairs], dtype=types.FLOAT)
        crop_h = side * fn.lookup_table(pick, keys=keys, values=[p[1] for p in pairs], dtype=types.FLOAT)
        spot = fn.random.choice(len(FIVE_POSITIONS))
        keys = list(range(len(FIVE_POSITIONS)))
        pos_x = fn.lookup_table(spot, keys=keys, values=[p[0] for p in FIVE_POSITIONS], dtype=types.FLOAT)
        pos_y = fn.lookup_table(spot, keys=keys, values=[p[1] for p in FIVE_POSITIONS], dtype=types.FLOAT)
    else:
        area = fn.random.uniform(range=[min(scales) ** 2, max(scales) ** 2]) * height * width
        ratio = dmath.exp(fn.random.uniform(range=[math.log(3 / 4), math.log(4 / 3)]))
        crop_w = dmath.min(dmath.sqrt(area * ratio), width)
        crop_h = dmath.min(dmath.sqrt(area / ratio), height)
        pos_x = fn.random.uniform(range=[0.0, 1.0])
        pos_y = fn.random.uniform(range=[0.0, 1.0])
    return (height - crop_h) * pos_y, (width - crop_w) * pos_x, crop_h, crop_w


def _resized_crop(image, cfg: LoaderConfig, height, width):
    """Random crop window resized to the input size; returns the image and the (y, x) scale."""
    y0, x0, crop_h, crop_w = _crop_window(cfg, height, width)
    size = cfg.input_size
    # Crops are at most a few tenths larger than the input, so aliasing is negligible; without
    # the antialiasing filter DALI's CPU resize is about a third faster.
    image = fn.resize(image, size=[size, size], roi_start=fn.stack(y0, x0),
                      roi_end=fn.stack(y0 + crop_h, x0 + crop_w), antialias=False)
    return image, size / crop_h, size / crop_w


def _normalise(image, cfg: LoaderConfig, flip, scale_y=1.0, scale_x=1.0, **crop):
    """crop_mirror_normalize: (x − mean) / std → float CHW, mirrored where ``flip``.

    RGB: ImageNet mean/std. Flow: dequantisation, (q − 127.5) · B / 127.5 / flow_scale, with the per-sample
    sign and resize factor of each field folded into its std: x fields × scale_x, negated
    when flipped (a mirrored video moves the other way), y fields × scale_y. One pass, no copy.
    """
    if cfg.stream == "spatial":
        mean, std = [255 * m for m in IMAGENET_MEAN], [255 * s for s in IMAGENET_STD]
    else:
        is_x = types.Constant(np.repeat([1.0, 0.0], CHANNELS // 2).astype(np.float32))
        sign_x = 1.0 - 2.0 * (fn.cast(flip, dtype=types.FLOAT) if isinstance(flip, DataNode) else flip)
        mean = 127.5
        std = (127.5 / cfg.flow_bound) * cfg.flow_scale / (is_x * (sign_x * scale_x) + (1.0 - is_x) * scale_y)
    return fn.crop_mirror_normalize(image, mirror=flip, mean=mean, std=std, dtype=types.FLOAT,
                                    output_layout="CHW", **crop)


def _decode(encoded, cfg: LoaderConfig, gpu: bool, crop_pos_x=None):
    """Decoded uint8 image and its (height, width) as float nodes; flow reshaped to CHW.

    With ``crop_pos_x`` (flow cropped to input_size columns without resizing: eval, or train
    ``crop_mode="random"``) only those columns of the tile are decoded: all 20 fields share
    them, and ROI decoding skips the rest of every row (see ``benchmarks.loader_stages``).
    """
    decoder = "mixed" if gpu else "cpu"
    shape = fn.cast(fn.peek_image_shape(encoded), dtype=types.FLOAT)  # (H, W, C) of the JPEG
    if cfg.stream == "spatial":
        return fn.decoders.image(encoded, device=decoder, output_type=types.RGB), shape[0], shape[1]
    if crop_pos_x is None:
        tiled = fn.decoders.image(encoded, device=decoder, output_type=types.GRAY)  # (20·H, W, 1)
        width = shape[1]
    else:
        width = types.Constant(np.float32(cfg.input_size))
        tiled = fn.decoders.image_crop(encoded, device=decoder, output_type=types.GRAY, crop_h=shape[0],
                                       crop_w=width, crop_pos_x=crop_pos_x)  # (20·H, input_size, 1)
    height = shape[0] / CHANNELS
    chw = fn.stack(types.Constant(np.float32(CHANNELS)), height, width)
    planes = fn.reshape(tiled, shape=fn.cast(chw, dtype=types.INT64), layout="CHW")  # a view: no copy
    return planes, height, width


def _unresized_crop_x(cfg: LoaderConfig):
    """Where an input-size crop without resizing takes its columns (None: crops need the whole
    frame), as ``crop_pos_x``: random in train ``crop_mode="random"``, the centre in eval."""
    if cfg.train:
        return fn.random.uniform(range=[0.0, 1.0]) if cfg.crop_mode == "random" else None
    return None if cfg.ten_crop else 0.5


def _train_transform(image, cfg: LoaderConfig, height, width, crop_pos_x):
    flip = fn.random.coin_flip() if cfg.flip else 0
    if cfg.crop_mode == "random":  # no resize: cheapest on the CPU, flow needs no rescaling
        size = cfg.input_size
        return _normalise(image, cfg, flip, crop=(size, size), crop_pos_x=crop_pos_x,
                          crop_pos_y=fn.random.uniform(range=[0.0, 1.0]))
    image, scale_y, scale_x = _resized_crop(image, cfg, height, width)
    return _normalise(image, cfg, flip, scale_y, scale_x)


def _eval_transform(image, cfg: LoaderConfig):
    size = cfg.input_size

    def crop(pos_x: float, pos_y: float, mirror: bool):
        return _normalise(image, cfg, int(mirror), crop=(size, size), crop_pos_x=pos_x, crop_pos_y=pos_y)
    if not cfg.ten_crop:
        return crop(0.5, 0.5, False)
    return fn.stack(*[crop(px, py, mirror) for mirror in (False, True) for px, py in FIVE_POSITIONS])


@pipeline_def
def _shard_pipeline(paths: list[str], cfg: LoaderConfig, gpu: bool, index_paths: list[str] | None = None):
    encoded, cls, meta = fn.readers.webdataset(
        paths=paths, index_paths=index_paths or [str(index_path(p)) for p in paths],
        ext=[STREAMS[cfg.stream], "cls", "json"], missing_component_behavior="error",
        shard_id=cfg.shard_id, num_shards=cfg.num_shards, seed=cfg.seed,
        random_shuffle=cfg.train, initial_fill=cfg.shuffle_buffer, pad_last_batch=not cfg.train, name=READER,
        # train: a new global shard order each epoch; eval: each worker always reads the same part
        **({"shuffle_after_epoch": True, "shuffle_after_epoch_seed": cfg.seed} if cfg.train
           else {"stick_to_shard": True}))
    crop_pos_x = _unresized_crop_x(cfg)
    image, height, width = _decode(encoded, cfg, gpu, crop_pos_x if cfg.stream == "temporal" else None)
    x = _train_transform(image, cfg, height, width, crop_pos_x) if cfg.train else _eval_transform(image, cfg)
    if cfg.stream == "temporal" and cfg.mean_subtraction:  # each field's mean displacement
        x = x - fn.reductions.mean(x, axes=[-2, -1], keep_dims=True)
    # Variable-length byte strings, zero-padded to the batch's longest so they form a tensor.
    return x, fn.pad(cls, fill_value=0), fn.pad(meta, fill_value=0)


def _strings(padded: torch.Tensor) -> list[bytes]:
    return [bytes(row).rstrip(b"\0") for row in padded.numpy()]


def _use_gpu(device: str) -> bool:
    if device == "gpu" and not torch.cuda.is_available():
        raise RuntimeError("LoaderConfig.device='gpu' but CUDA is not available")
    return device == "gpu" or (device == "auto" and torch.cuda.is_available())


class ShardLoader:
    """Iterating gives one epoch of batches; iterating again the next epoch (reshuffled in train).

    Batches: ``{"x": float (N, C, S, S) or (N, 10, C, S, S) with ten_crop, "label": int64 (N,),
    "video": list[str], "clip": int64 (N,)}``; x and label on the loader's device, clip on the CPU.
    Train epochs give ``len(self)`` full batches (the partial last one is dropped), the same
    count on every worker; eval epochs give every sample of the worker's part once, the last
    batch partial. An epoch left early is continued by the next iteration in train, and
    started over in eval (so an eval pass always sees every sample once).
    """

    def __init__(self, paths: list[Path], cfg: LoaderConfig, videos: set[str] | None = None):
        self.cfg, self.paths = cfg, paths
        self.samples = sum(check_shard(p, cfg) for p in paths)
        self._sampling = None  # with clips_per_video or videos: per shard, its index as (key, line)
        self._stored = None  # ... and per wanted video, its stored clip indices
        self._eval_index = None  # eval with clips_per_video or videos: the fixed per-shard indexes it reads
        epoch_samples = self.samples
        if cfg.clips_per_video is not None or videos is not None:
            self._sampling = {p: _index_lines(p) for p in paths}
            stored = stored_clips(key for lines in self._sampling.values() for key, _ in lines)
            # only the wanted videos' samples are listed in the indexes DALI reads: the others
            # are never read or decoded (issue 26: a validation set spread over train shards)
            self._stored = stored if videos is None else {v: c for v, c in stored.items() if v in videos}
            if videos is not None and not self._stored:
                raise ValueError(f"make_loader: none of the {len(videos)} wanted videos is in the "
                                 f"{len(paths)} shards given (first: {paths[0]})")
            k = cfg.clips_per_video
            epoch_samples = sum(len(c) if k is None else min(k, len(c)) for c in self._stored.values())
            self._index_dir = scratch.new_folder()  # named for this process: a killed one's is removed later
            weakref.finalize(self, shutil.rmtree, self._index_dir, ignore_errors=True)
        # DALI gives worker i the samples [⌊iN/k⌋, ⌊(i+1)N/k⌋) of the N it reads per epoch
        self.worker_samples = ((cfg.shard_id + 1) * epoch_samples // cfg.num_shards
                               - cfg.shard_id * epoch_samples // cfg.num_shards)
        if cfg.train and self.worker_samples < cfg.batch_size:
            raise ValueError(f"batch_size {cfg.batch_size} is more than the {self.worker_samples} samples "
                             f"worker {cfg.shard_id}/{cfg.num_shards} reads from {len(paths)} shards "
                             f"(train drops the partial last batch)")
        self._gpu = _use_gpu(cfg.device)
        device_id = torch.cuda.current_device() if self._gpu else None
        self.device = torch.device("cuda", device_id) if self._gpu else torch.device("cpu")
        self._epoch = None  # train: the epoch set_epoch built a pipeline for, until it is read
        self._next_epoch = 0  # train with clips_per_video: what a plain iteration reads next
        if self._sampling is None:
            self._build()
        elif not cfg.train:  # the same (evenly spaced) clips every pass
            k = cfg.clips_per_video
            self._eval_paths, self._eval_index = self._write_index(
                "eval", self.paths, self._stored if k is None else even_clips(self._stored, k))
            self._build(paths=self._eval_paths, index_paths=self._eval_index)
        else:  # every epoch has its own draw: a plain iteration reads epoch 0, 1, ...
            self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Train: make the next iteration give epoch ``epoch`` of this loader's sequence, whatever
        came before, so a run resumed at epoch k reads exactly what an uninterrupted one read.

        Each epoch gets its own pipeline, seeded by (seed, epoch), over the shards in an order
        drawn from the same pair (the same on every DDP worker), and with ``clips_per_video``
        over the clips drawn for (seed, epoch) (``shards.sampling``). Eval loaders ignore it.
        """
        if not self.cfg.train or epoch == self._epoch:
            return
        order = np.random.default_rng([self.cfg.seed, epoch]).permutation(len(self.paths))
        paths, index_paths = [self.paths[i] for i in order], None
        if self._sampling:
            paths, index_paths = self._epoch_index(epoch, paths)
        self._build(paths=paths, seed=int(np.random.default_rng([self.cfg.seed, epoch, 1]).integers(2**31)),
                    index_paths=index_paths)
        self._epoch, self._next_epoch = epoch, epoch + 1

    def _epoch_index(self, epoch: int, paths: list[Path]) -> tuple[list[Path], list[str]]:
        """Write per shard a DALI index listing only the samples drawn for ``epoch``."""
        k = self.cfg.clips_per_video
        drawn = self._stored if k is None else draw_clips(self._stored, k, self.cfg.seed, epoch)
        return self._write_index(f"epoch{epoch}", paths, drawn)

    def _write_index(self, name: str, paths: list[Path], drawn: dict[str, list[int]]) -> tuple[list[Path], list[str]]:
        """Per shard of ``paths``, a DALI index of only the ``drawn`` clips (in a new folder; the
        older folders go: DALI parsed their indexes when it built their pipeline); the shards
        holding none of them are left out. Returns the shards read and their indexes."""
        kept = epoch_index_lines(self._sampling, drawn)
        folder = self._index_dir / f"{name}-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
        for old in self._index_dir.iterdir():  # earlier epochs' indexes: DALI parsed them at build
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)
        read, out = [], []
        for n, path in enumerate(paths):
            if not kept[path]:
                continue
            idx = folder / f"{n:06d}-{index_path(path).name}"
            idx.write_text(f"{INDEX_VERSION} {len(kept[path])}\n" + "".join(line + "\n" for line in kept[path]))
            read.append(path)
            out.append(str(idx))
        return read, out

    def _build(self, paths: list[Path] | None = None, seed: int | None = None,
               index_paths: list[str] | None = None):
        cfg = self.cfg if seed is None else dataclasses.replace(self.cfg, seed=seed)
        pipe = _shard_pipeline([str(p) for p in paths or self.paths], cfg, self._gpu, index_paths,
                               batch_size=cfg.batch_size, num_threads=cfg.threads,
                               device_id=self.device.index, seed=cfg.seed, prefetch_queue_depth=2)
        # train: full batches only, the same count on every worker (DDP steps in lockstep)
        policy = LastBatchPolicy.DROP if cfg.train else LastBatchPolicy.PARTIAL
        self._iterator = DALIGenericIterator(pipe, ["x", "cls", "json"], reader_name=READER,
                                             last_batch_policy=policy, auto_reset=True)
        self._unfinished = False

    def __len__(self) -> int:
        if self.cfg.train:
            return len(self._iterator)
        return -(-self.worker_samples // self.cfg.batch_size)

    def __iter__(self):
        if self._unfinished and not self.cfg.train:
            self._build(paths=self._eval_paths if self._eval_index else None, index_paths=self._eval_index)
        if self._sampling is not None and self._epoch is None and not self._unfinished:
            self.set_epoch(self._next_epoch)  # a plain iteration: the next epoch's draw
        self._epoch = None  # consumed: set_epoch builds again, even for the same epoch
        self._unfinished = True
        try:
            yield from self._batches()
        except RuntimeError as exc:  # DALI names the operator, not the shard or sample
            culprit = find_corrupt_sample(self.paths)
            if culprit is None:
                raise
            raise culprit from exc
        self._unfinished = False

    def _batches(self):
        dtype = DTYPES[self.cfg.dtype]
        for (out,) in self._iterator:
            if not len(out["cls"]):  # eval: DALI pads the smaller parts with an empty batch
                continue
            metas = [json.loads(raw) for raw in _strings(out["json"])]
            yield {
                "x": out["x"].to(dtype),
                "label": torch.tensor([int(raw) for raw in _strings(out["cls"])], dtype=torch.int64,
                                      device=self.device),
                "video": [m["video"] for m in metas],
                "clip": torch.tensor([m["clip"] for m in metas], dtype=torch.int64),
            }


def make_loader(shards: str | Path | list, cfg: LoaderConfig, videos: set[str] | None = None) -> ShardLoader:
    """DALI loader over a split folder's subset (``…/split1/train``) or a list of ``.tar`` paths;
    with ``videos``, over those videos' samples only (the others are neither read nor decoded)."""
    return ShardLoader(shard_paths(shards), cfg, videos)
