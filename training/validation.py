"""Range and value checks of an ExperimentConfig, run before any work (and before Ray) starts.

``config_problems(cfg)`` lists every problem, one message each naming the key, the value and
what is allowed; ``validate(cfg)`` raises one ConfigError carrying all of them. The type checks
live in training.config (they run while the config is built); these are the checks a type
cannot express. Any ExperimentConfig - from YAML, a dict or command-line overrides - goes
through here.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from .config import STREAMS, ConfigError, ExperimentConfig, is_weights_keyword

PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
WEIGHT_KEYWORDS = ("none", "imagenet")  # and torchvision version names (training.models.weights_enum)


def _positive(problems: list[str], key: str, value, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        allowed = ">= 0" if allow_zero else "> 0"
        problems.append(f"{key}: {value!r} is not allowed (must be {allowed})")


def _fraction(problems: list[str], key: str, value, *, low_open: bool = True, high_open: bool = True) -> None:
    ok_low = value > 0 if low_open else value >= 0
    ok_high = value < 1 if high_open else value <= 1
    if not (ok_low and ok_high):
        interval = ("(" if low_open else "[") + "0, 1" + (")" if high_open else "]")
        problems.append(f"{key}: {value!r} is not allowed (must be in {interval})")


def config_problems(cfg: ExperimentConfig, stages: list[str] | None = None) -> list[str]:
    """Every problem of ``cfg`` for running ``stages`` (default: the config's own)."""
    p: list[str] = []
    stages = list(stages or cfg.stages)
    name = cfg.experiment.name
    if not PLAIN_NAME.match(name or "") or name in (".", ".."):
        p.append(f"experiment.name: {name!r} is not a plain name (letters, digits, '.', '_', '-', "
                 "starting with a letter or digit; no '/' or '..')")
    _positive(p, "experiment.seed", cfg.experiment.seed, allow_zero=True)

    d = cfg.data
    if d.split not in (1, 2, 3):
        p.append(f"data.split: {d.split!r} is not allowed (UCF101 has splits 1, 2, 3)")
    if d.synthetic is None and "data" in stages:  # later stages read the shards, not the videos
        for key in ("videos", "splits"):
            value = getattr(d, key)
            if value is None:
                p.append(f"data.{key}: null is only allowed with data.synthetic")
            elif not Path(value).expanduser().is_dir():
                p.append(f"data.{key}: {value!r} is not a readable folder")
    if d.classes is not None and len(d.classes) < 2:
        p.append(f"data.classes: {d.classes!r} must name at least 2 classes (or be null for all)")
    if d.dis_preset is not None and d.flow != "dis":
        p.append(f"data.dis_preset: {d.dis_preset!r} is only allowed with data.flow 'dis' (data.flow is {d.flow!r})")
    # what this machine lacks for data.flow (OpenCV contrib, RAFT weights): training.preflight
    _positive(p, "data.flow_bound", d.flow_bound)
    _positive(p, "data.clips_per_video", d.clips_per_video)
    _positive(p, "data.train_clips_stored", d.train_clips_stored)
    if d.train_clips_stored is not None and d.clips_per_video > d.train_clips_stored > 0:
        p.append(f"data.train_clips_stored: {d.train_clips_stored!r} is fewer than data.clips_per_video "
                 f"({d.clips_per_video}): each epoch draws clips_per_video of the stored clips")
    _positive(p, "data.test_clips", d.test_clips)
    _positive(p, "data.short_side", d.short_side)
    _positive(p, "data.workers", d.workers)
    _positive(p, "data.shard_seed", d.shard_seed, allow_zero=True)

    m = cfg.model
    if is_weights_keyword(m.weights):
        from .models import WeightsError, weights_enum  # torchvision's list of versions
        try:
            weights_enum(m.arch, m.weights)
        except WeightsError as exc:
            p.append(str(exc))
        if m.weights not in WEIGHT_KEYWORDS and not m.weights.isupper():
            p.append(f"model.weights: {m.weights!r} is not 'none', 'imagenet', a version name or an existing file")
    elif not Path(m.weights).expanduser().is_file():
        p.append(f"model.weights: {m.weights!r} is not 'none', 'imagenet', a version name (e.g. "
                 f"IMAGENET1K_V1) or an existing file")
    _positive(p, "model.input_size", m.input_size)
    _fraction(p, "model.dropout", m.dropout, low_open=False)
    _positive(p, "model.gamma_init", m.gamma_init)

    t = cfg.train
    _train_checks(p, t)
    for stream in STREAMS:  # a stream's own keys (train.<stream>.*), checked merged, named as set
        _stream_checks(p, t, stream, _train_checks)
    if t.compile and (reason := compile_unsupported()):
        p.append(f"train.compile: true is not allowed here ({reason}); set it to false")

    lo = cfg.loader
    if not lo.crop_scales or any(not 0 < s <= 1 for s in lo.crop_scales):
        p.append(f"loader.crop_scales: {lo.crop_scales!r} must be a non-empty list of values in (0, 1]")
    _positive(p, "loader.threads", lo.threads)
    _positive(p, "loader.shuffle_buffer", lo.shuffle_buffer)

    _positive(p, "eval.batch_size", cfg.eval.batch_size)
    _positive(p, "eval.speed_repeats", cfg.eval.speed_repeats, allow_zero=True)
    _positive(p, "eval.throughput_batch", cfg.eval.throughput_batch)
    _positive(p, "eval.val_clips", cfg.eval.val_clips)
    _positive(p, "eval.light_clips", cfg.eval.light_clips)
    svm_c = cfg.fusion.svm_c if isinstance(cfg.fusion.svm_c, list) else [cfg.fusion.svm_c]
    if not svm_c or any(not c > 0 for c in svm_c):
        p.append(f"fusion.svm_c: {cfg.fusion.svm_c!r} is not allowed (a value > 0 or a non-empty list of them)")
    _positive(p, "fusion.cv_folds", cfg.fusion.cv_folds)
    svm = [m for m in cfg.fusion.methods if m.startswith("svm")]
    if svm and "fuse" in stages and cfg.fusion.fit_on == "heldout" and cfg.train.val_fraction <= 0:
        p.append(f"fusion.fit_on: 'heldout' (for {svm}) needs held-out videos, but train.val_fraction "
                 f"is {cfg.train.val_fraction}; raise it or set fusion.fit_on: train")

    pr = cfg.prune
    _prune_checks(p, pr)
    for stream in STREAMS:
        _stream_checks(p, pr, stream, _prune_checks)
    if not pr.chains or len(set(pr.chains)) != len(pr.chains):
        p.append(f"prune.chains: {pr.chains!r} is not allowed (a non-empty list without repeats of "
                 "slimming, finetune_only, random)")

    e = cfg.explain
    if isinstance(e.steps, list):
        bad = [s for s in e.steps if not 0 <= s <= pr.steps]
        if bad:
            p.append(f"explain.steps: {bad!r} outside 0..prune.steps ({pr.steps})")
    for key in ("clips_per_video", "max_videos", "batch_size"):
        _positive(p, f"explain.{key}", getattr(e, key))
    if e.forward_batch != "auto":
        _positive(p, "explain.forward_batch", e.forward_batch)
    for key in ("methods", "metrics"):  # unknown names are refused by their Literal types
        names = getattr(e, key)
        if not names or len(set(names)) != len(names):
            p.append(f"explain.{key}: {names!r} is not allowed (a non-empty list without repeats)")
    for key in ("ig_steps", "smoothgrad_sigma", "smoothgrad_samples", "deletion_steps", "randomisation_clips"):
        _positive(p, f"explain.{key}", getattr(e, key))

    st = cfg.stats
    for key in ("accuracy", "irof"):
        _positive(p, f"stats.equivalence_margin.{key}", getattr(st.equivalence_margin, key))
    models = ["spatial", "temporal", *cfg.fusion.methods]
    if st.primary.model not in models:
        p.append(f"stats.primary.model: {st.primary.model!r} is not allowed (one of {models})")
    chains = pr.chains or ["slimming"]
    if st.primary.chain not in chains:
        p.append(f"stats.primary.chain: {st.primary.chain!r} is not a chain this config runs ({chains})")

    r = cfg.ray
    _positive(p, "ray.num_cpus", r.num_cpus)
    g = r.gpus_per_trial
    if g is not None and (g < 0 or (g > 1 and g != int(g))):
        p.append(f"ray.gpus_per_trial: {g!r} is not allowed (must be 0 = CPU only, a fraction in (0, 1] "
                 f"to share a GPU, e.g. 0.5 for two trials per GPU, or a whole number of GPUs)")
    _positive(p, "ray.cpus_per_trial", r.cpus_per_trial)
    _positive(p, "ray.max_failures", r.max_failures, allow_zero=True)
    return list(dict.fromkeys(p))  # a shared key's problem once, not once per stream


def _train_checks(p: list[str], t) -> None:
    """Range checks of train settings (literal key names: training.config_reference reads them)."""
    for key in ("runs", "epochs", "batch_size", "lr", "step_size", "lr_batch"):
        _positive(p, f"train.{key}", getattr(t, key))
    for key in ("weight_decay", "early_stopping_patience", "grad_clip", "sparsity", "warmup_epochs"):
        _positive(p, f"train.{key}", getattr(t, key), allow_zero=True)
    _fraction(p, "train.momentum", t.momentum, low_open=False)
    _fraction(p, "train.gamma", t.gamma, high_open=False)
    _fraction(p, "train.val_fraction", t.val_fraction, low_open=False)
    if t.dropout is not None:
        _fraction(p, "train.dropout", t.dropout, low_open=False)
    if t.sparsity_step == "proximal" and t.optimizer != "sgd":
        p.append(f"train.sparsity_step: 'proximal' is not allowed with train.optimizer {t.optimizer!r} "
                 f"(its shrink is SGD's: lr·λ/(1 − momentum)); use optimizer sgd or sparsity_step subgradient")
    if t.warmup_epochs >= t.epochs > 0:
        p.append(f"train.warmup_epochs: {t.warmup_epochs!r} must be fewer than train.epochs ({t.epochs})")
    if t.scheduler == "multistep" and (not t.milestones or t.milestones != sorted(set(t.milestones))
                                       or t.milestones[0] < 1 or t.milestones[-1] >= t.epochs):
        p.append(f"train.milestones: {t.milestones!r} must be increasing epochs in 1..{t.epochs - 1} "
                 f"(scheduler: multistep)")


def _prune_checks(p: list[str], pr) -> None:
    """Range checks of prune settings (literal key names, as ``_train_checks``)."""
    _fraction(p, "prune.step_fraction", pr.step_fraction)
    for key in ("steps", "min_channels", "round_to", "lr"):
        _positive(p, f"prune.{key}", getattr(pr, key))
    for key in ("finetune_epochs", "sparsity"):
        _positive(p, f"prune.{key}", getattr(pr, key), allow_zero=True)


def _stream_checks(p: list[str], section, stream: str, checks) -> None:
    """``checks`` on ``section`` with ``<section>.<stream>``'s keys over it; the problems of those
    keys (and of rules they take part in) are reported under ``<section>.<stream>.<key>``."""
    own = getattr(section, stream) or {}
    if not own:
        return
    found: list[str] = []
    checks(found, dataclasses.replace(section, spatial=None, temporal=None, **own))
    for message in found:
        name, _, rest = message.partition(":")
        _, _, key = name.partition(".")
        if key in own or any(k in rest for k in own):
            p.append(f"{name.split('.')[0]}.{stream}.{key}:{rest}")


def compile_unsupported() -> str | None:
    """Why ``torch.compile`` cannot run in this Python/torch (Dynamo's own check), else None."""
    import sys

    import torch
    import torch._dynamo
    if not torch._dynamo.is_dynamo_supported():
        return (f"torch.compile is not supported by torch {torch.__version__} on Python "
                f"{sys.version_info.major}.{sys.version_info.minor} / {sys.platform}")
    return None


def validate(cfg: ExperimentConfig, stages: list[str] | None = None) -> ExperimentConfig:
    """Return ``cfg`` if it has no problems for ``stages``, else raise one ConfigError listing each."""
    problems = config_problems(cfg, stages)
    if problems:
        raise ConfigError("\n".join(problems))
    return cfg
