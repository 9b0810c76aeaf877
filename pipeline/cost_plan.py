"""What a sweep will cost, before it runs: passes, GPU-hours, disk, ingest CPU-hours.

A pass is one clip-crop through one model: a forward (inference) or a forward + backward
(training; counted in ``backwards``). Counts come from the shards' manifest when the ``data``
stage has run, else from the split lists (or the synthetic set's parameters) and the config,
and follow the code: per (stream, run)

- ``train``: ``train.epochs`` epochs of the non-validation videos' drawn clips (an upper bound:
  early stopping and the dropped partial last batch can only make it less), a validation pass
  over the validation videos after each epoch (``eval.val_clips`` evenly spaced stored clips,
  10 crops under ``eval.val_ten_crop``), the test videos (``data.test_clips``
  × 10 crops under ``eval.ten_crop``; and once under the light protocol, ``eval.light_clips``
  clips and one crop), and the SVM fusions' fit videos
  (``training.data.train_eval_loader``) when an SVM fusion is configured;
- ``prune`` (one stage per chain of ``prune.chains``): per step ``prune.finetune_epochs`` of the
  same training (no validation: nothing reads it), and at the chain's tested steps (``tested_steps``) the test
  videos (also under the light protocol, before fine-tuning) and the fit videos;
- ``explain``: per explained model and clip one saliency pass (forward + backward) and IROF's
  ≈ ``IROF_FORWARDS`` forwards (SLIC's ~100 segments + the original; data-dependent: an estimate).

Left out: ``training.speed``'s timing passes (``eval.speed_repeats``: a few hundred clips a
model), ``pruning.accounting``'s FLOP counts (one image through two models a pruning step), Ray
retries, and the CPU-only fuse and report stages.

GPU-hours: inference passes at ``assumed_clips_per_second.inference`` and training passes at
``.training`` (defaults 4,500 and 1,500 clips/s for ResNet-101 at 224 px on one H100: assumptions,
not measurements), scaled by each model's FLOPs (architecture, input size, the temporal stream's
20 input channels, the pruned widths of a step, estimated as every prunable channel cut by the
step's ratio). Replace them with measured figures (``--clips-per-second INF,TRAIN``).
"""
from __future__ import annotations

import dataclasses
import math
from functools import lru_cache
from pathlib import Path

import polars as pl

from shards.format import UCF101_SIZE, clip_bytes, stored_frame_size

from core.config import STREAMS, STUDY_CHAIN, ExperimentConfig, tested_steps

REFERENCE = ("resnet101", 224)  # the model the default throughputs are for (3 input channels)
DEFAULT_CLIPS_PER_SECOND = {"inference": 4500.0, "training": 1500.0}
FLOW_CHANNELS = 20
TEN_CROPS = 10
IROF_FORWARDS = 101  # SLIC's default 100 segments + the original clip
# ingest: measured 233 flow pairs per CPU-second end to end at 320x240 (DIS fast); ≤ 10 pairs a clip
PAIRS_PER_CPU_SECOND = 233.0
PAIRS_PER_CLIP = 10


@dataclasses.dataclass
class Stage:
    name: str
    forwards: int = 0  # passes, training ones included
    backwards: int = 0  # training passes (forward + backward)
    gpu_hours: float = 0.0
    chain: str | None = None

    def add(self, passes: int, throughput: float, *, backward: bool = False) -> None:
        self.forwards += int(passes)
        if backward:
            self.backwards += int(passes)
        self.gpu_hours += passes / throughput / 3600

    def to_dict(self) -> dict:
        out = {"name": self.name, "forwards": self.forwards, "backwards": self.backwards,
               "gpu_hours": round(self.gpu_hours, 4)}
        if self.chain is not None:
            out["chain"] = self.chain
        return out


def video_table(cfg: ExperimentConfig) -> tuple[pl.DataFrame, str]:
    """(subset, video, group, clips stored) per video, and where it came from: the manifest when
    the shards exist, else the split lists, else the synthetic set's parameters."""
    manifest = Path(cfg.paths.shards) / "manifest.parquet"
    if manifest.is_file():
        from training.data import read_manifest
        return read_manifest(manifest.parent).select("subset", "video", "group", "clips"), str(manifest)
    train_clips = cfg.data.train_clips_stored or cfg.data.clips_per_video
    rows = []
    if cfg.data.synthetic is not None:
        s = cfg.data.synthetic
        classes, groups, per_group = s.get("classes", 8), s.get("groups", 8), s.get("clips", 2)
        for g in range(1, groups + 1):
            subset = "test" if (g - 1) % 3 == cfg.data.split - 1 else "train"
            rows += [(subset, f"c{c}_g{g:02d}_{i}", g) for c in range(classes) for i in range(per_group)]
        source = "data.synthetic"
    else:
        from ingest.ucf101 import read_split
        if cfg.data.splits is None or not Path(cfg.data.splits).is_dir():
            raise ValueError(f"data.splits: {cfg.data.splits!r} is not a readable folder; the plan counts "
                             f"the videos of its split lists (or of the shards' manifest, once built)")
        for subset in ("train", "test"):
            entries = read_split(Path(cfg.data.splits), cfg.data.split, subset, classes=cfg.data.classes,
                                 allow_missing=True)
            rows += [(subset, e.video_id, e.group) for e in entries]
        source = f"split lists {cfg.data.splits}"
    table = pl.DataFrame(rows, schema=["subset", "video", "group"], orient="row")
    return table.with_columns(clips=pl.when(pl.col("subset") == "train").then(train_clips)
                              .otherwise(cfg.data.test_clips)), source


def model_flops(arch: str, input_size: int, in_channels: int, keep: float = 1.0, residual: bool = False,
                width: float = 1.0) -> float:
    """FLOPs of one clip-crop through a stream model whose prunable channels are cut to ``keep``
    (internal block channels; every channel with ``residual``): convolutions and fc. ``width``
    (``model.width``) narrows every side but the image's and the classes'."""
    return sum(flops * keep ** power * width ** sides
               for flops, power, sides in _layer_flops(arch, input_size, in_channels, residual))


@lru_cache(maxsize=16)
def _layer_flops(arch: str, input_size: int, in_channels: int, residual: bool) -> tuple:
    """Per conv and fc layer (FLOPs unpruned, how many of its two sides are prunable, how many
    of them are channels ``model.width`` narrows)."""
    import torch
    from torch import nn
    from torchvision import models

    with torch.device("meta"):
        model = getattr(models, arch)(num_classes=101)
        if in_channels != 3:
            model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    last = "conv2" if arch in ("resnet18", "resnet34") else "conv3"  # a block's residual-side conv
    layers = []

    def power(name: str) -> int:
        parts = name.split(".")
        in_block = len(parts) > 2 and parts[-2] != "downsample"
        if residual:  # every channel is prunable: the stem's input (the image) is not
            return 1 + (name != "conv1")
        return int(in_block and parts[-1] != last) + int(in_block and parts[-1] != "conv1")

    def hook(name):
        def count(module, inputs, output):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            layers.append((2.0 * output.numel() * k, power(name), 1 + (name != "conv1")))
        return count

    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_hook(hook(name))
    model.eval()(torch.zeros(1, in_channels, input_size, input_size, device="meta"))
    layers.append((2.0 * model.fc.in_features * model.fc.out_features, int(residual), 1))
    return tuple(layers)


def step_keep(cfg: ExperimentConfig, step: int, chain: str) -> float:
    """The share of prunable channels a chain's model keeps at ``step``: the schedule's ratio
    (finetune_only removes none)."""
    if chain == "finetune_only" or step == 0:
        return 1.0
    return (1 - cfg.prune.step_fraction) ** step


def throughputs(cfg: ExperimentConfig, stream: str, keep: float, assumed: dict) -> dict:
    """Clips per second of one stream model at these widths: the reference figures × FLOPs ratio."""
    channels = FLOW_CHANNELS if stream == "temporal" else 3
    ratio = model_flops(*REFERENCE, 3) / model_flops(cfg.model.arch, cfg.model.input_size, channels,
                                                     keep, cfg.prune.residual, cfg.model.width)
    return {k: v * ratio for k, v in assumed.items()}


def _val_groups(table: pl.DataFrame, cfg: ExperimentConfig, run: int) -> set[int]:
    from training.data import val_groups
    return val_groups(table, cfg.train.val_fraction, cfg.run_seed(run))


def _stream_train(cfg: ExperimentConfig, stream: str):
    """The effective training settings of a stream (per-stream ``train.<stream>`` where the
    config has them, else ``train``)."""
    if hasattr(cfg, "stream_train"):
        return cfg.stream_train(stream)
    return cfg.train


def plan(cfg: ExperimentConfig, *, clips_per_second: dict | None = None) -> dict:
    """The cost plan of ``cfg``'s stages (see the module text); a JSON-ready dict."""
    from training.fusion import uses_svm
    assumed = {**DEFAULT_CLIPS_PER_SECOND, **(clips_per_second or {})}
    table, source = video_table(cfg)
    stages_run = set(cfg.stages)
    crops = TEN_CROPS if cfg.eval.ten_crop else 1
    test_passes = int(table.filter(pl.col("subset") == "test")["clips"].sum()) * crops
    # the light protocol (eval.light_clips evenly spaced clips, one crop): the unpruned model once,
    # each tested pruning step before its fine-tuning
    light_clips = getattr(cfg.eval, "light_clips", None)
    light_passes = 0 if light_clips is None else \
        int(table.filter(pl.col("subset") == "test")["clips"].clip(upper_bound=light_clips).sum())
    train_scores = "fuse" in stages_run and uses_svm(cfg.fusion.methods)
    chains = list(cfg.prune.chains) if cfg.prune.enabled and "prune" in stages_run else []
    stages = {"train": Stage("train")} if "train" in stages_run else {}
    for chain in chains:
        stages[f"prune:{chain}"] = Stage(f"prune:{chain}", chain=chain)
    explained = "explain" in stages_run and cfg.explain.enabled
    train_rows = table.filter(pl.col("subset") == "train")
    for run in range(1, cfg.train.runs + 1):
        held_out = _val_groups(table, cfg, run)
        is_val = pl.col("group").is_in(sorted(held_out))
        fit = train_rows.filter(is_val) if cfg.fusion.fit_on == "heldout" else train_rows
        val_crops = TEN_CROPS if cfg.eval.val_ten_crop else 1
        val_passes = int(train_rows.filter(is_val)["clips"].clip(upper_bound=cfg.eval.val_clips or None)
                         .sum()) * val_crops
        fit_passes = int(fit["clips"].sum()) * crops if train_scores else 0
        stored = train_rows.filter(~is_val)["clips"]
        d = cfg.data  # an epoch draws clips_per_video of the stored clips when more are stored
        drawn = int(stored.clip(upper_bound=d.clips_per_video).sum() if d.train_clips_stored is not None
                    and d.train_clips_stored > d.clips_per_video else stored.sum())
        for stream in STREAMS:
            settings = _stream_train(cfg, stream)
            rate = throughputs(cfg, stream, 1.0, assumed)
            if "train" in stages:
                s = stages["train"]
                s.add(settings.epochs * drawn, rate["training"], backward=True)
                if val_passes:
                    s.add(settings.epochs * val_passes, rate["inference"])
                s.add(test_passes + fit_passes + light_passes, rate["inference"])
            for chain in chains:
                s = stages[f"prune:{chain}"]
                tested = set(tested_steps(cfg, chain))
                for step in range(1, cfg.prune.steps + 1):
                    rate = throughputs(cfg, stream, step_keep(cfg, step, chain), assumed)
                    s.add(cfg.prune.finetune_epochs * drawn, rate["training"], backward=True)  # no validation
                    if step in tested:
                        s.add(test_passes + fit_passes + light_passes, rate["inference"])
    if explained:
        for chain in chains or [STUDY_CHAIN]:
            name = "explain" if chain == STUDY_CHAIN else f"explain:{chain}"
            stages[name] = Stage(name, chain=chain)
            _plan_explain(cfg, table, stages[name], chain, assumed)
    out = {
        "config": cfg.experiment.name, "videos_from": source,
        "videos": {"train": train_rows.height, "test": table.height - train_rows.height},
        "assumed_clips_per_second": {**assumed, "for": f"{REFERENCE[0]} at {REFERENCE[1]} px, 3 input channels; "
                                     "scaled by each model's FLOPs"},
        "stages": [s.to_dict() for s in stages.values()],
        "gpu_hours": round(sum(s.gpu_hours for s in stages.values()), 3),
        "gpu_hours_by_chain": {},
        "left_out": ["training.speed timing passes (eval.speed_repeats)",
                     "pruning.accounting FLOP counts (2 single-image forwards a pruning step)", "Ray retries",
                     "fuse and report (CPU only)"],
    }
    shared = sum(s.gpu_hours for s in stages.values() if s.chain is None)
    for chain in chains:  # a chain's pruning and explaining
        out["gpu_hours_by_chain"][chain] = round(sum(s.gpu_hours for s in stages.values() if s.chain == chain), 3)
    out["gpu_hours_study"] = round(shared + sum(s.gpu_hours for s in stages.values() if s.chain == STUDY_CHAIN), 3)
    out["disk"] = disk_estimate(cfg, table)
    out["ingest_cpu_hours"] = round(ingest_cpu_hours(cfg, table), 3)
    return out


def _plan_explain(cfg, table, stage: Stage, chain: str, assumed: dict) -> None:
    from explanations.stage import explain_tasks
    tests = table.filter(pl.col("subset") == "test")
    videos = tests.height if cfg.explain.max_videos is None else min(tests.height, cfg.explain.max_videos)
    videos += len(cfg.explain.figure_videos) if cfg.explain.max_videos is not None else 0  # at most
    clips = min(videos, tests.height) * cfg.explain.clips_per_video
    for stream, _run, step, task_chain in explain_tasks(cfg):
        if task_chain != chain:
            continue
        rate = throughputs(cfg, stream, step_keep(cfg, step, chain), assumed)
        stage.add(clips, rate["training"], backward=True)  # saliency: forward + backward
        stage.add(clips * IROF_FORWARDS, rate["inference"])


def source_size(cfg: ExperimentConfig) -> tuple[int, int]:
    """The videos' frame size: the synthetic set's, else UCF101's."""
    if cfg.data.synthetic is not None:
        return cfg.data.synthetic.get("width", 320), cfg.data.synthetic.get("height", 240)
    return UCF101_SIZE


def sample_bytes(cfg: ExperimentConfig) -> float:
    """Estimated bytes of one stored clip (sample) at the config's frame size."""
    return clip_bytes(*source_size(cfg), cfg.data.short_side)


def disk_estimate(cfg: ExperimentConfig, table: pl.DataFrame | None = None) -> dict:
    """Bytes the shards and the checkpoints will take (an estimate from measured bytes per clip
    and the models' parameters), for the sweep's plan and the ingest's preflight."""
    if table is None:
        table, _ = video_table(cfg)
    clips = int(table["clips"].sum())
    shards = clips * sample_bytes(cfg)
    models_saved = 1 + (cfg.prune.steps * len(cfg.prune.chains) if cfg.prune.enabled else 0)
    checkpoints = checkpoint_bytes(cfg) * models_saved * len(STREAMS) * cfg.train.runs
    return {"shards_bytes": int(shards), "checkpoints_bytes": int(checkpoints),
            "total_bytes": int(shards + checkpoints), "clips_stored": clips,
            "bytes_per_clip": round(sample_bytes(cfg))}


def checkpoint_bytes(cfg: ExperimentConfig) -> int:
    """Bytes of one model's checkpoint: its float32 parameters (pruned checkpoints shrink with the
    kept channels: an upper bound keeps them whole)."""
    import torch
    from torchvision import models
    with torch.device("meta"):  # counts only, no memory
        params = sum(p.numel() for p in getattr(models, cfg.model.arch)(num_classes=101).parameters())
    return 4 * params


def stage_disk_need(cfg: ExperimentConfig, stage: str) -> tuple[int, str]:
    """(bytes, what they are) the plan expects ``stage`` to write: ``data`` the shards, ``train``
    the unpruned checkpoints, ``prune`` its pruned steps' ones. The plan does not estimate the
    other stages' files (scores, results tables, figures: small beside those): for them, the
    whole sweep's shards and checkpoints."""
    per_model = checkpoint_bytes(cfg) * len(STREAMS) * cfg.train.runs
    if stage == "train":
        return per_model, f"its {len(STREAMS) * cfg.train.runs} checkpoints"
    if stage == "prune" and cfg.prune.enabled:
        saved = cfg.prune.steps * len(cfg.prune.chains)
        return per_model * saved, f"its {len(STREAMS) * cfg.train.runs * saved} pruned checkpoints"
    disk = disk_estimate(cfg)
    if stage == "data":
        return disk["shards_bytes"], f"the shards ({disk['clips_stored']:,} clips)"
    return disk["total_bytes"], f"the whole sweep's shards and checkpoints; stage {stage}'s own files are not estimated"


def ingest_cpu_hours(cfg: ExperimentConfig, table: pl.DataFrame) -> float:
    """Ingest CPU-hours: ≤ 10 flow pairs a stored clip at the measured pairs per CPU-second,
    scaled by the frame's pixels."""
    width, height = stored_frame_size(*source_size(cfg), cfg.data.short_side)
    pixels = width * height / (UCF101_SIZE[0] * UCF101_SIZE[1])
    return int(table["clips"].sum()) * PAIRS_PER_CLIP * pixels / PAIRS_PER_CPU_SECOND / 3600


def render(result: dict) -> str:
    """The plan as text (what ``--dry-run`` prints)."""
    a = result["assumed_clips_per_second"]
    lines = [f"cost plan of {result['config']} ({result['videos']['train']:,} train / "
             f"{result['videos']['test']:,} test videos, from {result['videos_from']})",
             f"  assumed throughput: {a['inference']:,.0f} clips/s inference, {a['training']:,.0f} training "
             f"({a['for']})",
             f"  {'stage':<24}{'forwards':>16}{'backwards':>16}{'GPU-hours':>12}"]
    for s in result["stages"]:
        lines.append(f"  {s['name']:<24}{s['forwards']:>16,}{s['backwards']:>16,}{s['gpu_hours']:>12.2f}")
    lines.append(f"  {'total':<24}{'':>32}{result['gpu_hours']:>12.2f}")
    lines.append(f"  the study (train, slimming, explain): {result['gpu_hours_study']:.2f} GPU-hours")
    d = result["disk"]
    lines.append(f"  disk: shards {_gib(d['shards_bytes'])} ({d['clips_stored']:,} clips x "
                 f"{d['bytes_per_clip'] / 1024:.0f} KiB), checkpoints <= {_gib(d['checkpoints_bytes'])}")
    lines.append(f"  ingest: {result['ingest_cpu_hours']:.2f} CPU-hours")
    lines.append("  left out: " + "; ".join(result["left_out"]))
    return "\n".join(lines)


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def parse_clips_per_second(text: str) -> dict:
    """``INFERENCE,TRAINING`` clips per second (the reference model's) from a flag."""
    try:
        inference, training = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--clips-per-second {text!r}: expected INFERENCE,TRAINING, e.g. 4500,1500") from None
    if not (inference > 0 and training > 0 and math.isfinite(inference + training)):
        raise ValueError(f"--clips-per-second {text!r}: both figures must be > 0")
    return {"inference": inference, "training": training}
