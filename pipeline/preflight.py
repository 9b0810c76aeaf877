"""Everything a sweep needs, checked before its first stage starts (#25).

Before: the paper config on a machine without the ImageNet weights started ingesting, and every
training trial failed later, after Tune's retries. Now ``pipeline.sweep`` runs ``preflight``
after the config's own checks and before anything is written or a stage runs: one message per
problem (exit 2, no traceback):

- pretrained weights of every stream the stages build (``model.weights``: torchvision's cache,
  else a download is tried now; failing, the URL, the cache path and the ``model.weights: PATH``
  alternative);
- the data stage's inputs (``ingest.preflight``, by name: the split lists, every listed video
  unless ``data.allow_missing``, free disk for the shards against an estimate of their size, the
  flow backend: OpenCV contrib for ``tvl1``, RAFT weights for ``raft_*``); later stages without
  the data stage need the shards' manifest;
- GPUs, when the config asks for them (``ray.gpus_per_trial`` > 0, ``train.device: cuda``,
  ``loader.device: gpu``) and the cluster has none or no node with enough (Tune would wait
  forever): ``gpu_problem``, checked again on the connected cluster before the first stage;
- a writable experiment root.

``preflight(cfg, stages, dry_run=True)`` (the sweep's ``--dry-run``) downloads and writes
nothing and starts no Ray: it reports what it found (videos, classes, trials per stage, whether
the weights are cached, the shards' size estimate, GPUs this machine lacks: a dry run is often
made where the run is not) and the problems.
"""
from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from core.config import STREAMS, STUDY_CHAIN, ExperimentConfig, tested_steps
from ingest.preflight import check_data_stage

PRETRAINED_STAGES = ("train",)  # stages that build streams from model.weights (later ones load checkpoints)
SHARD_STAGES = ("train", "prune", "fuse", "explain")  # stages that read the shards
DOWNLOAD_TIMEOUT_S = 60  # per socket operation: an unreachable host is an error, not a hang


class PreflightFailed(RuntimeError):
    """Problems found before the first stage; ``problems`` holds one message each."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class Report:
    facts: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(self.facts + [f"problem: {p}" for p in self.problems])


@dataclass(frozen=True)
class WeightSource:
    """Where a stream's pretrained weights come from: a torchvision download (``url``, cached at
    ``path``) or a local file (``url`` None)."""
    arch: str
    weights: str
    url: str | None
    path: Path

    @property
    def cached(self) -> bool:
        return self.path.is_file()


def _weights_enum(arch: str, weights: str):
    """torchvision's weights member ``weights`` names (``imagenet`` = the arch's DEFAULT, or a
    version such as ``IMAGENET1K_V1``); None for a file path."""
    import torchvision
    versions = torchvision.models.get_model_weights(arch)
    if weights == "imagenet":
        return versions.DEFAULT
    return versions.__members__.get(weights)


def pretrained_source(arch: str, weights: str) -> WeightSource | None:
    """The one place that says where ``model.weights`` comes from (None for ``none``); goes through
    ``training.models.weights_enum`` where that exists (named versions), else ``_weights_enum``."""
    if weights == "none":
        return None
    from training import models
    enum = getattr(models, "weights_enum", _weights_enum)(arch, weights)
    if enum is None:
        return WeightSource(arch, weights, None, Path(weights).expanduser())
    import torch
    return WeightSource(arch, weights, enum.url, Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name)


def stream_weights(cfg: ExperimentConfig) -> dict[str, tuple[str, str]]:
    """(arch, weights) of each stream the train stage builds."""
    return {stream: (cfg.model.arch, cfg.model.weights) for stream in STREAMS}


def weight_sources(cfg: ExperimentConfig, stages: list[str]) -> list[WeightSource]:
    """The distinct pretrained weights the stages will load."""
    if not any(s in PRETRAINED_STAGES for s in stages):
        return []
    sources = {}
    for arch, weights in stream_weights(cfg).values():
        source = pretrained_source(arch, weights)
        if source is not None:
            sources[(source.arch, source.path)] = source
    return list(sources.values())


def weights_problem(source: WeightSource, download: bool) -> str | None:
    """None if ``source`` is there (downloading it into torchvision's cache first, under
    ``download``), else one message with the URL, the cache path and the local-file alternative."""
    if source.url is None:
        return None if source.cached else f"model.weights: {source.weights!r} is no file (nor none, imagenet or a version name)"
    if source.cached or not download:
        return None
    import torch
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        torch.hub.load_state_dict_from_url(source.url, model_dir=str(source.path.parent), progress=False,
                                           check_hash=True, map_location="cpu")
        return None
    except Exception as exc:  # URLError, timeouts, a bad hash: all one message
        return (f"model.weights: {source.weights!r} ({source.arch}) is not in torchvision's cache "
                f"({source.path}) and downloading {source.url} failed ({' '.join(str(exc).split())[:200]}); "
                f"download that file where there is internet and copy it to {source.path}, or set "
                f"model.weights: PATH to a local copy of it")
    finally:
        socket.setdefaulttimeout(previous)


def root_problem(root: Path, probe: bool) -> str | None:
    """None if the experiment root is (or can be made) a writable folder; ``probe`` also creates
    and removes a file in it or its nearest existing ancestor (what permission bits do not say:
    read-only mounts, root squash)."""
    where = Path(root)
    while not where.exists() and where != where.parent:
        where = where.parent
    if not where.is_dir():
        return f"experiment.root: {root} cannot be made: {where} is not a folder"
    if not os.access(where, os.W_OK | os.X_OK):
        return f"experiment.root: {root} is not writable ({where}: permission denied)"
    if probe:
        try:
            fd, name = tempfile.mkstemp(prefix=".crossroads-write-probe-", dir=where)
            os.close(fd)
            os.unlink(name)
        except OSError as exc:
            return f"experiment.root: {root} is not writable ({where}: {exc.strerror or exc})"
    return None


def gpu_request(cfg: ExperimentConfig) -> str | None:
    """The config key that asks for GPUs, as ``key: value``; None if it runs on CPUs."""
    if cfg.ray.gpus_per_trial:
        return f"ray.gpus_per_trial: {cfg.ray.gpus_per_trial:g}"
    if cfg.train.device == "cuda":
        return "train.device: cuda"
    if cfg.loader.device == "gpu":
        return "loader.device: gpu"
    return None


def gpu_problem(cfg: ExperimentConfig, where: str, total: float, per_node: float | None = None) -> str | None:
    """None if ``where`` (``total`` GPUs, at most ``per_node`` on one node) can run the config's trials."""
    asked = gpu_request(cfg)
    if asked is None:
        return None
    if total <= 0:
        return (f"{asked} asks for GPUs, but {where} has none (the trials would wait for them forever); "
                f"run on a cluster with GPUs, or set ray.gpus_per_trial: 0, train.device: auto and "
                f"loader.device: auto for CPUs")
    need = cfg.ray.gpus_per_trial or 0
    if per_node is not None and need > per_node:
        return (f"{asked}: no node of {where} has {need:g} GPUs (the most on one node: {per_node:g}); "
                f"a trial would wait forever")
    return None


def local_gpus() -> int:
    """GPUs an embedded local Ray would find here."""
    import torch
    return torch.cuda.device_count()


def ray_gpus() -> tuple[float, float]:
    """(GPUs in the connected Ray cluster, the most on one alive node)."""
    import ray
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return (float(ray.cluster_resources().get("GPU", 0)),
            max((float(n["Resources"].get("GPU", 0)) for n in nodes), default=0.0))


def explain_grid_cost(cfg: ExperimentConfig) -> str:
    """The explanation grid's share of the explain stage (issue 30): scores per clip, and what
    beyond the study's pair multiplies the work (docs/explanations.md)."""
    ex = cfg.explain
    if (ex.methods, ex.metrics) == (["vanilla_gradient"], ["irof"]):
        return " (the study's pair: vanilla gradient, IROF)"
    extra = [f"{len(ex.methods)} methods × {len(ex.metrics)} metrics per clip, each metric's random "
             "control once per clip"]
    if "integrated_gradients" in ex.methods:
        extra.append(f"IG {ex.ig_steps} forward+backward passes per clip")
    if "smoothgrad" in ex.methods:
        extra.append(f"SmoothGrad {ex.smoothgrad_samples}")
    if "road" in ex.metrics:
        extra.append("ROAD 50 imputations + forwards per clip and map")
    if "randomisation" in ex.metrics:
        extra.append(f"randomisation: {ex.randomisation_clips} clips per model × 6 stage maps per method")
    return " (grid: " + "; ".join(extra) + ")"


def stage_work(cfg: ExperimentConfig, stages: list[str]) -> list[str]:
    """Per stage, the trials or tasks it runs (what the dry run shows)."""
    runs, streams = cfg.train.runs, len(STREAMS)
    steps = cfg.prune.steps if cfg.prune.enabled and "prune" in stages else 0
    explained = (steps + 1 if cfg.explain.steps == "all"
                 else len({s for s in cfg.explain.steps if s <= steps}))
    # control chains (issue 27) fine-tune every step, are fused and explained at their tested steps
    chains = cfg.prune.chains if steps else [STUDY_CHAIN]
    controls = sum(len(tested_steps(cfg, c)) for c in chains if c != STUDY_CHAIN)
    per_chain = f" × {len(chains)} chains" if len(chains) > 1 else ""
    work = {"data": "1 Ray task (ingest actors: data.workers)",
            "train": f"{runs * streams} Tune trials (2 streams × {runs} runs)",
            "prune": (f"{runs * streams * len(chains)} Tune trials{per_chain and f' (2 streams × {runs} runs{per_chain})'}"
                      f" of {cfg.prune.steps} steps each" if cfg.prune.enabled
                      else "nothing (prune.enabled: false)"),
            "fuse": f"{runs * (steps + 1 + controls)} Ray tasks ({runs} runs × ({steps + 1} steps"
                    + (f" + {controls} control steps" if controls else "") + "))",
            "explain": f"{runs * streams * (explained + controls)} models explained" + explain_grid_cost(cfg),
            "report": "1 Ray task"}
    return [f"  {stage}: {work.get(stage, '?')}" for stage in stages]


def _will_start_local_ray(address: str | None, cfg: ExperimentConfig) -> bool:
    import ray
    return not (ray.is_initialized() or address or cfg.ray.address or os.environ.get("RAY_ADDRESS"))


def preflight(cfg: ExperimentConfig, stages: list[str], *, dry_run: bool = False,
              address: str | None = None) -> Report:
    """Check everything the stages need (see the module doc); ``dry_run``: no download, nothing written."""
    report = Report()
    if problem := root_problem(cfg.paths.root, probe=not dry_run):
        report.problems.append(problem)
    if "data" in stages:
        try:
            data = check_data_stage(cfg)
            report.facts += data.facts
            report.problems += data.problems
        except (ValueError, OSError) as exc:  # e.g. data.synthetic arguments generate() refuses
            report.problems.append(f"data: {exc}")
    elif any(s in SHARD_STAGES for s in stages):
        manifest = cfg.paths.shards / "manifest.parquet"
        if not manifest.is_file():
            report.problems.append(f"shards: {manifest} not found; the stages {stages} read the shards: add "
                                   f"the data stage (stages: [data, ...]) or set experiment.root to where they are")
        else:
            import pyarrow.parquet as pq
            try:
                labels = pq.read_table(manifest, columns=["label"]).column("label").to_pylist()
                report.facts.append(f"videos: {len(labels)} in the shards' manifest, classes: {len(set(labels))}")
            except Exception as exc:  # pyarrow's errors: unreadable, not Parquet, no such column
                report.problems.append(f"shards: {manifest} cannot be read ({exc}); rebuild it with the data stage")
    report.facts.append("work:")
    report.facts += stage_work(cfg, stages)
    try:
        sources = weight_sources(cfg, stages)
    except Exception as exc:  # an unknown version name (training.models.WeightsError) and the like
        sources = []
        report.problems.append(str(exc) if str(exc).startswith("model.weights") else f"model.weights: {exc}")
    for source in sources:
        state = ("cached" if source.cached else "not cached: a run downloads it before any stage") \
            if source.url else ("local file" if source.cached else "missing")
        report.facts.append(f"weights {source.arch} {source.weights}: {state} ({source.url or source.path})")
        if problem := weights_problem(source, download=not dry_run):
            report.problems.append(problem)
    if _will_start_local_ray(address, cfg):
        if problem := gpu_problem(cfg, "this machine (an embedded local Ray)", local_gpus()):
            # a dry run is often made where the run is not (a login node, a laptop): a finding
            (report.facts if dry_run else report.problems).append(
                f"GPUs: {problem}" if dry_run else problem)
    elif gpu_request(cfg):
        report.facts.append(f"GPUs: {gpu_request(cfg)}, checked on the cluster before the first stage")
    return report
