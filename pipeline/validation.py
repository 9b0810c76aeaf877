"""Range and value checks of an ExperimentConfig, run before any work (and before Ray) starts.

``config_problems(cfg)`` lists every problem, one message each naming the key, the value and
what is allowed; ``validate(cfg)`` raises one ConfigError carrying all of them. Types and the
range of each number are the schema's (core.config, checked by pydantic while the config
is built); these are the checks a field's type cannot express: rules between keys, names, and
what this machine has. Any ExperimentConfig - from YAML, a dict or command-line overrides -
goes through here.
"""
from __future__ import annotations

import re
from pathlib import Path

from core.config import STREAMS, ConfigError, ExperimentConfig, _with, is_weights_keyword

PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
WEIGHT_KEYWORDS = ("none", "imagenet")  # and torchvision version names (training.models.weights_enum)


def config_problems(cfg: ExperimentConfig, stages: list[str] | None = None) -> list[str]:
    """Every problem of ``cfg`` for running ``stages`` (default: the config's own)."""
    p: list[str] = []
    stages = list(stages or cfg.stages)
    name = cfg.experiment.name
    if not PLAIN_NAME.match(name or "") or name in (".", ".."):
        p.append(f"experiment.name: {name!r} is not a plain name (letters, digits, '.', '_', '-', "
                 "starting with a letter or digit; no '/' or '..')")

    d = cfg.data
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
    # what this machine lacks for data.flow (OpenCV contrib, RAFT weights): pipeline.preflight
    if d.train_clips_stored is not None and d.clips_per_video > d.train_clips_stored > 0:
        p.append(f"data.train_clips_stored: {d.train_clips_stored!r} is fewer than data.clips_per_video "
                 f"({d.clips_per_video}): each epoch draws clips_per_video of the stored clips")

    m = cfg.model
    if is_weights_keyword(m.weights):
        from training.models import WeightsError, weights_enum  # torchvision's list of versions
        try:
            weights_enum(m.arch, m.weights)
        except WeightsError as exc:
            p.append(str(exc))
        if m.weights not in WEIGHT_KEYWORDS and not m.weights.isupper():
            p.append(f"model.weights: {m.weights!r} is not 'none', 'imagenet', a version name or an existing file")
    elif not Path(m.weights).expanduser().is_file():
        p.append(f"model.weights: {m.weights!r} is not 'none', 'imagenet', a version name (e.g. "
                 f"IMAGENET1K_V1) or an existing file")
    if m.width < 1 and m.weights != "none":
        p.append(f"model.width: {m.width!r} narrows a model built from scratch; model.weights "
                 f"{m.weights!r} are for the full-width {m.arch} (use width 1.0, or weights none)")

    t = cfg.train
    _train_checks(p, t)
    for stream in STREAMS:  # a stream's own keys (train.<stream>.*), checked merged, named as set
        _stream_checks(p, t, stream, _train_checks)
    if t.compile and (reason := compile_unsupported()):
        p.append(f"train.compile: true is not allowed here ({reason}); set it to false")

    lo = cfg.loader
    if not lo.crop_scales or any(not 0 < s <= 1 for s in lo.crop_scales):
        p.append(f"loader.crop_scales: {lo.crop_scales!r} must be a non-empty list of values in (0, 1]")

    svm_c = cfg.fusion.svm_c if isinstance(cfg.fusion.svm_c, list) else [cfg.fusion.svm_c]
    if not svm_c or any(not c > 0 for c in svm_c):
        p.append(f"fusion.svm_c: {cfg.fusion.svm_c!r} is not allowed (a value > 0 or a non-empty list of them)")
    svm = [m for m in cfg.fusion.methods if m.startswith("svm")]
    if svm and "fuse" in stages and cfg.fusion.fit_on == "heldout" and cfg.train.val_fraction <= 0:
        p.append(f"fusion.fit_on: 'heldout' (for {svm}) needs held-out videos, but train.val_fraction "
                 f"is {cfg.train.val_fraction}; raise it or set fusion.fit_on: train")

    pr = cfg.prune
    if not pr.chains or len(set(pr.chains)) != len(pr.chains):
        p.append(f"prune.chains: {pr.chains!r} is not allowed (a non-empty list without repeats of "
                 "slimming, finetune_only, random)")

    e = cfg.explain
    if isinstance(e.steps, list):
        bad = [s for s in e.steps if not 0 <= s <= pr.steps]
        if bad:
            p.append(f"explain.steps: {bad!r} outside 0..prune.steps ({pr.steps})")
    for key in ("methods", "metrics"):  # unknown names are refused by their Literal types
        names = getattr(e, key)
        if not names or len(set(names)) != len(names):
            p.append(f"explain.{key}: {names!r} is not allowed (a non-empty list without repeats)")

    st = cfg.stats
    models = ["spatial", "temporal", *cfg.fusion.methods]
    if st.primary.model not in models:
        p.append(f"stats.primary.model: {st.primary.model!r} is not allowed (one of {models})")
    chains = pr.chains or ["slimming"]
    if st.primary.chain not in chains:
        p.append(f"stats.primary.chain: {st.primary.chain!r} is not a chain this config runs ({chains})")

    r = cfg.ray
    g = r.gpus_per_trial
    if g is not None and (g < 0 or (g > 1 and g != int(g))):
        p.append(f"ray.gpus_per_trial: {g!r} is not allowed (must be 0 = CPU only, a fraction in (0, 1] "
                 f"to share a GPU, e.g. 0.5 for two trials per GPU, or a whole number of GPUs)")
    return list(dict.fromkeys(p))  # a shared key's problem once, not once per stream


def _train_checks(p: list[str], t) -> None:
    """Rules between train settings (literal key names: pipeline.config_reference reads the rule
    each message states)."""
    if t.warmup_epochs >= t.epochs > 0:
        p.append(f"train.warmup_epochs: {t.warmup_epochs!r} must be fewer than train.epochs ({t.epochs})")
    if t.scheduler == "multistep" and (not t.milestones or t.milestones != sorted(set(t.milestones))
                                       or t.milestones[0] < 1 or t.milestones[-1] >= t.epochs):
        p.append(f"train.milestones: {t.milestones!r} must be increasing epochs in 1..{t.epochs - 1} "
                 f"(scheduler: multistep)")


def _stream_checks(p: list[str], section, stream: str, checks) -> None:
    """``checks`` on ``section`` with ``<section>.<stream>``'s keys over it; the problems of those
    keys (and of rules they take part in) are reported under ``<section>.<stream>.<key>``."""
    own = getattr(section, stream) or {}
    if not own:
        return
    found: list[str] = []
    checks(found, _with(section, spatial=None, temporal=None, **own))
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
