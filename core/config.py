"""The experiment config: typed dataclasses read from a YAML file (``ray_configs/*.yaml``).

Every section is a pydantic dataclass: pydantic checks each value's type and range while the
config is built, and ``core.config_errors`` words its findings (the key, the value, what is
allowed, the closest key to an unknown one). Checks that involve several keys or this machine
live in ``pipeline.validation``. The owner of a stage may add fields to its own section (see
docs/ARCHITECTURE.md, "Experiment config").
"""
from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import asdict, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import ConfigDict, Field, Strict, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass, rebuild_dataclass
from typing_extensions import TypedDict

from core.config_errors import messages

STREAMS = ("spatial", "temporal")
# pruning chains (prune.chains): the study's Network Slimming and its controls (issue 27):
# finetune_only = the unpruned model fine-tuned exactly as each step is (extra training without
# removal); random = channels ranked by a seeded uniform random score instead of |γ| (does the
# criterion beat chance). Step 0, the unpruned model, is shared and belongs to slimming.
CHAINS = ("slimming", "finetune_only", "random")
STUDY_CHAIN = "slimming"
FUSIONS = ("mean", "svm_softmax", "svm_features", "svm_logits")  # the late fusions, in the study's order
WEIGHT_KEYWORDS = ("none", "imagenet")  # model.weights values that are not a file
WEIGHTS_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")  # a torchvision weights version, e.g. IMAGENET1K_V2


def is_weights_keyword(value: str) -> bool:
    """``model.weights`` values that name weights rather than a file: none, imagenet, IMAGENET1K_V1 …"""
    return value in WEIGHT_KEYWORDS or bool(WEIGHTS_NAME.match(value))


DEFAULT_STAGES = ["data", "train", "prune", "fuse", "explain", "report"]


class ConfigError(ValueError):
    """An experiment config that cannot be used as written."""


# YAML scalars as written: pydantic's lax mode would take "5" for 5, 1 for true and true for 1;
# strict it takes none of these, and widens an int where a float is expected (lr: 1 -> 1.0)
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Bool = Annotated[bool, Strict()]
PositiveInt = Annotated[int, Strict(), Field(gt=0)]
NonNegativeInt = Annotated[int, Strict(), Field(ge=0)]
PositiveFloat = Annotated[float, Strict(), Field(gt=0)]
NonNegativeFloat = Annotated[float, Strict(), Field(ge=0)]
DropRate = Annotated[float, Strict(), Field(ge=0, lt=1)]  # dropout, momentum, a held-out share
Share = Annotated[float, Strict(), Field(gt=0, le=1)]  # a factor or share in (0, 1]
# a key no section declares is an error (core.config_errors suggests the closest key)
SECTION = ConfigDict(extra="forbid")


@dataclass(config=SECTION)
class ExperimentSection:
    name: str = "experiment"  # the experiment's name: default root runs/<name>, report title
    root: str | None = None  # default runs/<name>
    seed: NonNegativeInt = 0  # base seed; repeat r of a stream seeds from seed + r


@dataclass(config=SECTION)
class DataConfig:
    videos: str | None = None  # folder of class folders; null with `synthetic`
    splits: str | None = None  # folder of UCF101 split lists
    split: Annotated[int, Strict(), Field(ge=1, le=3)] = 1  # the UCF101 split whose lists are used
    synthetic: dict | None = None  # keyword arguments of ingest.synthetic.generate
    classes: list[str] | None = None  # a subset of class names, null = all
    flow: Literal["dis", "farneback", "tvl1", "raft_small", "raft_large"] = "dis"  # ingest.flow.BACKENDS
    dis_preset: Literal["ultrafast", "fast", "medium"] | None = None  # flow dis only; null = fast
    flow_bound: PositiveFloat = 20.0  # flow quantisation bound in pixels (|flow| clipped to it)
    clips_per_video: PositiveInt = 3  # clips per train video each epoch reads
    # clips stored per train video (ingest, evenly spaced); each epoch draws clips_per_video of
    # them per (seed, epoch, video), TSN-style (shards.sampling); null = clips_per_video (the
    # same clips every epoch)
    train_clips_stored: PositiveInt | None = None
    test_clips: PositiveInt = 25  # evenly spaced clips stored and evaluated per test video
    short_side: PositiveInt | None = None  # null = source size
    workers: PositiveInt = 2  # shard-building tasks at once (Ray)
    allow_missing: Bool = False  # drop list entries whose video is absent instead of refusing the lists
    shard_seed: NonNegativeInt = 0  # seed of the permutation of each subset's videos over its shards (lists are class-sorted)


@dataclass(config=SECTION)
class ModelConfig:
    arch: Literal["resnet18", "resnet50", "resnet101"] = "resnet18"  # the ResNet of both streams
    # none | imagenet (torchvision's current default version of the arch) | a torchvision weights
    # version by name (IMAGENET1K_V1, IMAGENET1K_V2: training.models.weights_name) | a state_dict path
    weights: str = "none"
    input_size: PositiveInt = 224  # the network's input crop, pixels a side
    dropout: DropRate = 0.0  # dropout before the classifier (default of train[.<stream>].dropout)
    freeze_backbone: Bool = False  # train the classifier only
    # the temporal stream's input is flow / flow_scale: 1 = pixels of the input; data.flow_bound
    # = about ±1 (TSN-style). A model is trained and evaluated with one scale.
    flow_scale: Float = 1.0
    # every BatchNorm's γ set to this before training (Liu et al. start at 0.5, so the L1 pull
    # has less to cover); null = as built (1.0 from scratch, the pretrained values)
    gamma_init: PositiveFloat | None = None
    # every layer's channels × width (from scratch only): a small set needs no ImageNet-wide
    # ResNet, and a narrow one costs about width² of the passes
    width: Share = 1.0


@dataclass(config=SECTION)
class TrainConfig:
    runs: PositiveInt = 1  # independent repeats per stream, each with its own seed
    epochs: PositiveInt = 1  # baseline training epochs (at most, with early stopping)
    batch_size: PositiveInt = 32  # train clips per batch
    optimizer: Literal["sgd", "adamw"] = "sgd"  # the optimiser of training and fine-tuning
    lr: PositiveFloat = 0.01  # initial learning rate of the baseline
    # the batch `lr` was published for: the lr used is lr × batch_size / lr_batch (linear scaling,
    # Goyal et al. 2017), so a recipe's lr is written as published; null = lr as written
    lr_batch: PositiveInt | None = None
    weight_decay: NonNegativeFloat = 1e-4  # the optimiser's weight decay
    momentum: DropRate = 0.9  # SGD momentum
    scheduler: Literal["none", "cosine", "step", "multistep"] = "cosine"  # learning-rate schedule over the epochs
    step_size: PositiveInt = 10  # epochs between lr drops (scheduler: step)
    gamma: Share = 0.1  # lr factor per drop (scheduler: step, multistep)
    milestones: list[Int] = field(default_factory=list)  # epochs at which the lr drops (multistep)
    warmup_epochs: NonNegativeInt = 0  # lr ramps linearly up to `lr` over these first epochs
    early_stopping_patience: NonNegativeInt = 0  # epochs without a better `select` metric; 0 = off
    # the weights kept at the end: the epoch of the best val_accuracy (clip accuracy, ties to
    # the lower loss) or val_loss, or the last epoch; null = val_loss with early stopping, else last
    select: Literal["val_accuracy", "val_loss", "last"] | None = None
    grad_clip: NonNegativeFloat = 0.0  # max gradient norm; 0 = off
    amp: Bool = True  # bf16 autocast on GPU (ignored on CPU)
    channels_last: Bool = True  # channels_last memory format for training, fine-tuning and latency timing
    compile: Bool = False  # torch.compile the model
    val_fraction: DropRate = 0.1  # fraction of train groups held out for validation
    sparsity: NonNegativeFloat = 0.0  # BN-L1 strength during baseline training, 0 = off
    # false: BatchNorm γ/β get no weight decay (only the L1 term pulls γ); Liu et al. decay them
    bn_weight_decay: Bool = True
    dropout: DropRate | None = None  # dropout before the classifier; null = model.dropout
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto = cuda where available, else cpu
    # per-stream settings over the ones above (any key but runs, val_fraction, device)
    spatial: TrainStream | None = None
    temporal: TrainStream | None = None  # as spatial, for the temporal stream


# train keys one stream may set for itself (runs and the val split are shared: fusion pairs them)
STREAM_TRAIN_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig)
                          if f.name not in ("runs", "val_fraction", "device", *STREAMS))
# fine-tuning keys of prune one stream may set for itself (the pruning grid is shared)
STREAM_PRUNE_KEYS = ("finetune_epochs", "lr", "sparsity")


@dataclass(config=SECTION)
class LoaderSection:
    """The shards.dali.LoaderConfig fields that are the same for every loader of a run."""
    crop_mode: Literal["corner", "random_resized", "random"] = "corner"  # train crop: corner (multi-scale corner crop, TSN), random_resized, random (no resize)
    crop_scales: list[Float] = field(default_factory=lambda: [1.0, 0.875, 0.75, 0.66])  # corner crop sides as fractions of the frame's short side
    flip: Bool = True  # train-time horizontal flip (x flow negated)
    mean_subtraction: Bool = False  # temporal: subtract each field's mean displacement
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"  # the loader's output type
    threads: PositiveInt | None = None  # DALI CPU threads per loader, null = ray.cpus_per_trial (at least 1)
    device: Literal["auto", "cpu", "gpu"] = "auto"  # where DALI decodes and augments; auto = gpu where CUDA is present
    shuffle_buffer: PositiveInt = 1024  # train samples DALI shuffles among


@dataclass(config=SECTION)
class EvalConfig:
    batch_size: PositiveInt | None = None  # null = train.batch_size
    ten_crop: Bool = False  # 10 crops (4 corners + centre, and their flips) per clip instead of the centre crop
    # inference speed of every trained / pruned model (training.speed): timed forward passes per
    # batch size (0 = not measured), and the batch of the throughput figure
    speed_repeats: NonNegativeInt = 3
    throughput_batch: PositiveInt = 8  # batch size of the throughput figure
    # the validation protocol (issue 26; early stopping and the training curves read it): clips per
    # validation video, evenly spaced among the stored ones (null = every stored clip), and 10
    # crops or the centre crop. The test protocol (data.test_clips, ten_crop) is the measurement.
    val_clips: PositiveInt | None = 5  # clips per validation video, evenly spaced of the stored ones; null = all
    val_ten_crop: Bool = False  # 10 crops per validation clip instead of the centre crop
    # the light protocol of `video_accuracy_before_finetune` (each prune, before fine-tuning,
    # and the unpruned model): this many evenly spaced test clips per video, one centre crop
    light_clips: PositiveInt = 5


@dataclass(config=SECTION)
class FusionConfig:
    methods: list[Literal[FUSIONS]] = field(  # the late fusions computed at every pruning step
        default_factory=lambda: list(FUSIONS))
    # LinearSVC regularisation: one value, or candidates chosen by cv_folds-fold cross-validation
    svm_c: Union[Float, list[Float]] = field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0])
    cv_folds: PositiveInt = 3  # folds of the cross-validation that picks svm_c from a list
    # heldout = the SVMs fit on the train list's validation videos (never trained on; needs
    # train.val_fraction > 0); train = on every train-list video (the original study)
    fit_on: Literal["heldout", "train"] = "heldout"


@dataclass(config=SECTION)
class PruneConfig:
    enabled: Bool = True  # false: the prune stage does nothing
    step_fraction: Annotated[float, Strict(), Field(gt=0, lt=1)] = 0.04  # fraction of the remaining prunable channels removed per step
    steps: PositiveInt = 17  # removed after k steps: 1 - 0.96**k, so 17 steps -> 50.04 %
    finetune_epochs: NonNegativeInt = 1  # fine-tuning epochs after each pruning step
    sparsity: NonNegativeFloat = 1e-5  # BN-L1 strength while fine-tuning
    residual: Bool = False  # also prune channels on the residual path
    min_channels: PositiveInt = 8  # no pruned layer keeps fewer channels
    round_to: PositiveInt = 1  # every pruned width a multiple of this
    lr: PositiveFloat = 0.001  # learning rate while fine-tuning after each step
    # pruning chains run for every (stream, run): slimming (the study), finetune_only (unpruned,
    # fine-tuned as each step is), random (random channel scores, same rules); the controls
    # fine-tune every step but are evaluated and explained only at explain.steps and the last step
    chains: list[Literal["slimming", "finetune_only", "random"]] = field(default_factory=lambda: ["slimming"])
    # per-stream fine-tuning settings over the ones above (finetune_epochs, lr, sparsity)
    spatial: PruneStream | None = None
    temporal: PruneStream | None = None  # as spatial, for the temporal stream


def _stream_section(name: str, section: type, keys: tuple[str, ...]) -> type:
    """A per-stream section (``train.spatial``): a mapping of some of ``section``'s keys, each
    typed and ranged as in ``section``; a dict holding only the keys set (``to_dict`` and hence
    the config hash see what was written, as before the pydantic schema)."""
    typed = TypedDict(name, {k: section.__annotations__[k] for k in keys}, total=False)
    typed.__pydantic_config__ = SECTION
    typed.__module__ = __name__  # its annotations name this module's aliases (PositiveFloat …)
    return typed


TrainStream = _stream_section("TrainStream", TrainConfig, STREAM_TRAIN_KEYS)
PruneStream = _stream_section("PruneStream", PruneConfig, STREAM_PRUNE_KEYS)


@dataclass(config=SECTION)
class ExplainConfig:
    enabled: Bool = True  # false: the explain stage does nothing
    steps: Union[Literal["all"], list[Int]] = "all"  # "all" = every step 0..prune.steps
    # the class a map and its IROF score explain: the model's own prediction (as Quantus' examples)
    # or the true label (the original study; IROF's p(x_k)/p(x) explodes on misclassified clips)
    target: Literal["predicted", "label"] = "predicted"
    clips_per_video: PositiveInt = 1  # test clips explained per video
    max_videos: PositiveInt | None = None  # null = every test video
    figure_videos: list[str] = field(default_factory=list)  # video ids whose maps are kept
    reduce: Literal["max", "mean", "sum"] = "max"  # over channels of |gradient| (explanations.saliency)
    baseline: Literal["per_image_mean", "quantus"] = "per_image_mean"  # IROF fill (explanations.irof)
    batch_size: PositiveInt = 8  # clips per saliency + IROF call
    # IROF inputs per forward pass; "auto" = timed on the first inputs of each model (explanations.irof)
    forward_batch: Union[PositiveInt, Literal["auto"]] = "auto"
    # the explanation grid (issue 30; explanations.methods, explanations.metrics, explanations.grid): every
    # method is scored by every metric into results/faithfulness; the study's pair is the default
    methods: list[Literal["vanilla_gradient", "integrated_gradients", "smoothgrad", "grad_cam"]] = \
        field(default_factory=lambda: ["vanilla_gradient"])
    metrics: list[Literal["irof", "road", "deletion", "insertion", "randomisation"]] = \
        field(default_factory=lambda: ["irof"])  # the faithfulness metrics each map is scored by
    ig_steps: PositiveInt = 32  # Integrated Gradients' Gauss-Legendre steps (baseline: the data mean)
    smoothgrad_sigma: PositiveFloat = 0.5  # SmoothGrad's noise std, in units of the normalised input
    smoothgrad_samples: PositiveInt = 16  # SmoothGrad's noisy samples per map
    deletion_steps: PositiveInt = 50  # deletion/insertion curve points (H·W / steps pixels a step)
    randomisation_clips: PositiveInt = 8  # clips per (stream, run, step) for the randomisation check (costly)


@dataclass(config=SECTION)
class EquivalenceMargin:
    # the largest difference from step 0 that counts as "no change" (TOST, analysis.equivalence)
    accuracy: PositiveFloat = 1.0  # percentage points of accuracy
    # on IROF ÷ the clip's segment count (0 = removal changes nothing, 1 = all evidence gone at the
    # first segment): 0.05 = 5 % of that span, as 1 point is 1 % of accuracy's; one scale for clips
    # with many or few segments (analysis.equivalence)
    irof: PositiveFloat = 0.05


@dataclass(config=SECTION)
class PrimaryEndpoint:
    # the confirmatory test of the report; every other model, chain and metric is secondary
    metric: Literal["video_accuracy", "clip_accuracy", "video_top5", "loss", "irof"] = "video_accuracy"
    model: str = "spatial"  # spatial | temporal | a fusion method
    chain: str = "slimming"  # the pruning chain whose steps the primary test compares


@dataclass(config=SECTION)
class StatsConfig:
    equivalence_margin: EquivalenceMargin = field(default_factory=EquivalenceMargin)
    primary: PrimaryEndpoint = field(default_factory=PrimaryEndpoint)


@dataclass(config=SECTION)
class RayConfig:
    address: str | None = None  # null = embedded local Ray
    num_cpus: PositiveInt | None = None  # for the embedded local Ray, null = all
    gpus_per_trial: Float | None = None  # null = 1 where the cluster has GPUs, else 0
    cpus_per_trial: PositiveFloat = 1  # CPUs per train/prune trial and explain task; also its torch and DALI threads
    max_failures: NonNegativeInt = 2  # Tune retries of a failed trial (from its last checkpoint)
    storage_path: str | None = None  # null = <root>/ray


@dataclasses.dataclass
class ExperimentPaths:
    root: Path
    split: int

    @property
    def shards(self) -> Path:
        return self.root / "shards" / f"split{self.split}"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def saliency(self) -> Path:
        return self.root / "saliency"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def ray(self) -> Path:
        return self.root / "ray"

    def checkpoint(self, stream: str, run: int, step: int = 0, chain: str = STUDY_CHAIN) -> Path:
        """A model's checkpoint: step 0 (shared by every chain) and slimming's steps as before,
        a control chain's steps under ``checkpoints/<chain>/``."""
        return self.checkpoints / _chain_folder(chain, step) / stream / f"run{run}" / f"step{step}.pt"

    def scores(self, stream: str, run: int, step: int = 0, subset: str = "test", chain: str = STUDY_CHAIN) -> Path:
        """Per-video scores and features of one model on one subset (fusion reads these)."""
        return self.root / "scores" / _chain_folder(chain, step) / stream / f"run{run}" / f"step{step}_{subset}.npz"


def tested_steps(cfg: "ExperimentConfig", chain: str) -> list[int]:
    """The pruned steps a chain evaluates and explains: every step for slimming (explained at
    ``explain.steps``); for a control the explained steps (``explain.steps``, without 0) and the last
    step, which keeps the controls' cost to their fine-tuning (``pruning.schedule``)."""
    last = cfg.prune.steps
    if chain == STUDY_CHAIN:
        return list(range(1, last + 1))
    explained = range(last + 1) if cfg.explain.steps == "all" else cfg.explain.steps
    return sorted({k for k in explained if 0 < k <= last} | {last})


def _chain_folder(chain: str, step: int) -> str:
    if chain not in CHAINS:
        raise ValueError(f"unknown pruning chain {chain!r}; known: {list(CHAINS)}")
    return "" if chain == STUDY_CHAIN or step == 0 else chain


@dataclass(config=SECTION)
class ExperimentConfig:
    experiment: ExperimentSection = field(default_factory=ExperimentSection)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loader: LoaderSection = field(default_factory=LoaderSection)
    eval: EvalConfig = field(default_factory=EvalConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    stages: list[str] = field(default_factory=lambda: list(DEFAULT_STAGES))  # the stages a sweep runs, in order

    @property
    def paths(self) -> ExperimentPaths:
        root = self.experiment.root or f"runs/{self.experiment.name}"
        return ExperimentPaths(Path(root).expanduser().resolve(), self.data.split)

    def stream_train(self, stream: str) -> TrainConfig:
        """``train`` with ``train.<stream>`` over it (what one stream trains with), its lr
        scaled linearly to its batch size when ``lr_batch`` is set (then null in the result)."""
        settings = _merged(self.train, getattr(self.train, stream), f"train.{stream}")
        if settings.lr_batch:
            settings = _with(settings, lr=settings.lr * settings.batch_size / settings.lr_batch, lr_batch=None)
        return settings

    def stream_prune(self, stream: str) -> PruneConfig:
        """``prune`` with ``prune.<stream>`` over it (one stream's fine-tuning)."""
        return _merged(self.prune, getattr(self.prune, stream), f"prune.{stream}")

    def stream_dropout(self, stream: str) -> float:
        """The dropout before ``fc`` of one stream: ``train[.<stream>].dropout``, else ``model.dropout``."""
        dropout = self.stream_train(stream).dropout
        return self.model.dropout if dropout is None else dropout

    def finetune_train(self, stream: str) -> TrainConfig:
        """The TrainConfig of one pruning step's fine-tuning: the stream's training settings
        with the stream's prune lr, epochs and no warm-up, early stopping or selection (the
        last epoch is kept, as Liu et al. fine-tune a fixed number of epochs)."""
        prune = self.stream_prune(stream)
        return _with(self.stream_train(stream), epochs=prune.finetune_epochs, lr=prune.lr,
                     sparsity=prune.sparsity, warmup_epochs=0, scheduler="cosine",
                     early_stopping_patience=0, select="last")

    def run_seed(self, run: int) -> int:
        """The seed of repeat ``run`` (1-based), shared by both streams of that run."""
        return self.experiment.seed + run

    @classmethod
    def from_dict(cls, data: Any) -> "ExperimentConfig":
        """The config of a raw mapping; a ConfigError lists every problem pydantic found."""
        try:
            return _ADAPTER.validate_python(data)
        except ValidationError as exc:
            raise ConfigError("\n".join(messages(exc, data, cls))) from None

    def to_dict(self) -> dict:
        return asdict(self)


# keys holding a file-system path, with the values that are not paths
PATH_KEYS = {("experiment", "root"): (), ("data", "videos"): (), ("data", "splits"): (),
             ("model", "weights"): WEIGHT_KEYWORDS, ("ray", "storage_path"): ()}


def resolve_paths(data: Any, base: str | Path) -> Any:
    """A copy of the raw config mapping ``data`` with every relative path under ``PATH_KEYS``
    made absolute against ``base`` (the yaml file's folder), so that a config means the same
    files from any working directory. ``~`` is expanded; absolute paths, URIs (``s3://…``),
    keywords (``model.weights: imagenet``) and values of other types (left for the type checks)
    stay as they are. A key that is not set keeps its default (``experiment.root``:
    ``runs/<name>`` under the working directory)."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    for (section, key), keywords in PATH_KEYS.items():
        part = data.get(section)
        value = part.get(key) if isinstance(part, dict) else None
        if not isinstance(value, str) or not value or value in keywords or "://" in value \
                or (key == "weights" and is_weights_keyword(value)):
            continue
        path = Path(value).expanduser()
        resolved = str(path if path.is_absolute() else (Path(base) / path).resolve())
        if resolved != value:
            data[section] = part = {**part, key: resolved}
    return data


def _merged(section: Any, overrides: dict | None, where: str) -> Any:
    """``section`` with the keys of ``overrides`` (typed and ranged by the schema) over it."""
    return _with(section, spatial=None, temporal=None, **(overrides or {}))


def _with(section: Any, **changes) -> Any:
    """A copy of ``section`` with ``changes``, not validated again: derived settings may leave a
    range the written config must keep (fine-tuning for ``prune.finetune_epochs: 0`` epochs)."""
    out = copy.copy(section)
    out.__dict__.update(changes)
    return out


def dotted_keys(d: dict, prefix: str = "") -> dict:
    """A nested config mapping as {"section.key": value} (what changed between two configs)."""
    flat = {}
    for key, value in d.items():
        if isinstance(value, dict):
            flat |= dotted_keys(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_hash(cfg: "ExperimentConfig") -> str:
    """A short, stable fingerprint of the resolved config (provenance of results)."""
    import hashlib
    import json
    return hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:16]


# the sections naming TrainStream / PruneStream were declared before them
for _section in (TrainConfig, PruneConfig, ExperimentConfig):
    rebuild_dataclass(_section)
_ADAPTER = TypeAdapter(ExperimentConfig)
