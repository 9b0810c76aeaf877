"""The ingest's plan and rerun rules: which videos go into which shard (``plan_shards``, a
seeded permutation cut into fixed runs), the options that decide the shards' bytes
(``Options``, recorded in ``.parts/options.json``) and when a rerun may continue an output
folder (``check_options``: same options and inputs, else ``OptionsChanged``)."""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from shards.format import DEFAULT_FLOW_BOUND, DEFAULT_TEST_CLIPS, MANIFEST_NAME, UCF101_SIZE, clip_bytes
from core.atomic import write_text_atomic

from ingest.flow import get_backend
from ingest.ucf101 import SUBSETS, VideoEntry, read_split


PARTS_DIRNAME = ".parts"


OPTIONS_NAME = "options.json"


SAMPLES_PER_SHARD = 1000  # bound on a shard's size (~100-200 MB at 320x240)


MIN_SHARDS = 8  # small sets still get several shards (parallel tasks, per-GPU sharding)


@dataclass(frozen=True)
class Options:
    """Everything that decides the shards' bytes (a rerun must use the same)."""
    split: int
    flow: str = "dis"
    flow_bound: float = DEFAULT_FLOW_BOUND
    clips_per_video: int = 5
    train_spacing: str = "even"
    test_clips: int = DEFAULT_TEST_CLIPS
    short_side: int | None = None
    seed: int = 0
    flow_options: dict = field(default_factory=dict)
    shard_seed: int = 0  # the permutation of each subset's videos over its shards (plan_shards)

    def clips(self, subset: str) -> int:
        return self.clips_per_video if subset == "train" else self.test_clips


@dataclass(frozen=True)
class ShardJob:
    subset: str
    index: int
    entries: tuple[VideoEntry, ...]

    @property
    def name(self) -> str:
        return f"{self.subset}/shard-{self.index:06d}.tar"

    @property
    def part_name(self) -> str:
        return f"{self.subset}-shard-{self.index:06d}.parquet"


@dataclass
class Summary:
    ok: int
    failed: int
    shards: int
    samples: int
    out: Path
    failures: list[tuple[str, str]]  # (video path, error)

    def __str__(self) -> str:
        lines = [f"{self.ok} ok, {self.failed} failed, {self.samples} samples in {self.shards} "
                 f"shards under {self.out}"]
        if self.failures:
            lines.append(f"failed videos (status 'failed' in {self.out / MANIFEST_NAME}):")
            lines += [f"  {video}: {error}" for video, error in self.failures[:20]]
            if len(self.failures) > 20:
                lines.append(f"  ... and {len(self.failures) - 20} more")
        return "\n".join(lines)


def plan_shards(entries: list[VideoEntry], subset: str, clips: int,
                shard_videos: int | None = None, seed: int = 0) -> list[ShardJob]:
    """Consecutive runs of a seeded permutation of the list's videos: the same for every run of
    the same list and seed, and each shard a random draw of the subset's classes."""
    if shard_videos is None:
        shard_videos = max(1, min(math.ceil(len(entries) / MIN_SHARDS), SAMPLES_PER_SHARD // clips))
    order = np.random.default_rng([seed, SUBSETS.index(subset)]).permutation(len(entries))
    shuffled = [entries[i] for i in order]
    return [ShardJob(subset, i, tuple(shuffled[lo:lo + shard_videos]))
            for i, lo in enumerate(range(0, len(entries), shard_videos))]


def sample_order(samples: list[dict], seed: int) -> list[dict]:
    """A shard's samples in a seeded order of their keys, so a video's clips are spread over the
    shard (the loader's shuffle buffer then holds clips of more videos); the order depends on the
    keys alone, not on which samples came from a spool or an older tar."""
    return sorted(samples, key=lambda s: hashlib.sha256(f"{seed}/{s['__key__']}".encode()).digest())


class OptionsChanged(ValueError):
    """The output folder was built with other options or inputs (the message names each)."""


def inputs_fingerprint(videos: Path, splits: Path, split: int, jobs: list[ShardJob]) -> dict:
    """(size, mtime) of every input file, by path relative to its folder; None if missing."""
    def stat(path: Path):
        try:
            st = path.stat()
        except OSError:
            return None
        return [st.st_size, st.st_mtime_ns]
    lists = ["classInd.txt", *(f"{s}list0{split}.txt" for s in SUBSETS)]
    return ({f"splits/{name}": stat(Path(splits) / name) for name in lists}
            | {f"videos/{e.path}": stat(Path(videos) / e.path) for job in jobs for e in job.entries})


def _failed_inputs(out: Path) -> set[str]:
    """Inputs whose videos failed last time: they may change (fixed) without a refusal."""
    return {f"videos/{r['path']}" for part in (out / PARTS_DIRNAME).glob("*-shard-*.parquet")
            for r in pq.read_table(part, columns=["path", "status"]).to_pylist()
            if r["status"] != "ok"}


def check_options(out: Path, record: dict, overwrite: bool, write: bool = True) -> None:
    """Refuse to mix shards built with other options or from other inputs into one folder.

    ``record`` is the options plus ``inputs`` (the fingerprint). Under ``overwrite`` the old
    shards, parts and manifest are removed instead. Call with the folder's lock held (or with
    ``write=False``: only the check, nothing removed or written).
    """
    path = out / PARTS_DIRNAME / OPTIONS_NAME
    if path.is_file() and not overwrite:
        found = json.loads(path.read_text())
        if "shard_seed" not in found:
            raise OptionsChanged(
                f"{out} holds shards built in list order (before shards held a seeded permutation of "
                f"their videos: a train shard of the class-sorted UCF101 lists holds one or two classes, "
                f"so training batches would too); rebuild it with --overwrite (the sweep: delete {out})")
        old_inputs, new_inputs = found.pop("inputs", {}), record["inputs"]
        wanted = {k: v for k, v in record.items() if k != "inputs"}
        diff = [f"  {k}: was {found.get(k)!r}, now {v!r}" for k, v in wanted.items()
                if found.get(k) != v]
        diff += [f"  {k}: was {found[k]!r}, now missing" for k in found if k not in wanted]
        changed = sorted(k for k in set(old_inputs) | set(new_inputs)
                         if old_inputs.get(k) != new_inputs.get(k)) if old_inputs else []
        changed = [k for k in changed if k not in _failed_inputs(out)]
        diff += [f"  input {k}: was (size, mtime_ns) {old_inputs.get(k)}, now {new_inputs.get(k)}"
                 for k in changed[:20]]
        if len(changed) > 20:
            diff.append(f"  ... and {len(changed) - 20} more changed inputs")
        if diff:
            raise OptionsChanged(f"{out} holds shards built with other options or inputs:\n"
                                 + "\n".join(diff)
                                 + "\nuse another --out, or --overwrite to rebuild it")
    elif path.is_file() and write:  # overwrite: remove what the old build wrote
        for old in [*out.glob("*/shard-*.tar"), *out.glob("*/shard-*.idx"),
                    *(out / PARTS_DIRNAME).glob("*.parquet"), out / MANIFEST_NAME]:
            old.unlink(missing_ok=True)
    if write:
        write_text_atomic(path, json.dumps(record, sort_keys=True))


def planned_bytes(jobs: list[ShardJob], opts: Options) -> int:
    """About how many bytes the shards of ``jobs`` take (``--dry-run`` measures it)."""
    per_clip = clip_bytes(*UCF101_SIZE, opts.short_side)  # UCF101's frame size: an estimate for messages
    return int(sum(len(job.entries) * opts.clips(job.subset) for job in jobs) * per_clip)


@dataclass(frozen=True)
class IngestPlan:
    """What an ingest of one split will make: its options, each subset's videos and shard jobs,
    and the record ``.parts/options.json`` keeps (a rerun must match it: ``check_options``)."""
    opts: Options
    entries: dict[str, list[VideoEntry]]
    jobs: dict[str, list[ShardJob]]
    record: dict

    @property
    def all_jobs(self) -> list[ShardJob]:
        return [job for subset in SUBSETS for job in self.jobs[subset]]


def plan_ingest(videos, splits, split: int, *, flow: str = "dis", clips_per_video: int = 5,
                test_clips: int = DEFAULT_TEST_CLIPS, short_side: int | None = None,
                classes: list[str] | None = None, allow_missing: bool = False,
                shard_videos: int | None = None, flow_bound: float = DEFAULT_FLOW_BOUND,
                train_spacing: str = "even", seed: int = 0, flow_options: dict | None = None,
                shard_seed: int = 0) -> IngestPlan:
    """Read the split lists and plan the shards (the one place the ingest's options are named;
    ``build_shards`` and ``dry_run`` take them as keywords). Fails before any work if the flow
    backend cannot run here or a list is unreadable."""
    videos = Path(videos)
    opts = Options(split=split, flow=flow, flow_bound=flow_bound, clips_per_video=clips_per_video,
                   train_spacing=train_spacing, test_clips=test_clips, short_side=short_side,
                   seed=seed, flow_options=dict(flow_options or {}), shard_seed=shard_seed)
    get_backend(flow, **opts.flow_options)  # fail now, not in every task, if it cannot run here
    entries = {subset: read_split(splits, split, subset, videos=videos, classes=classes,
                                  allow_missing=allow_missing) for subset in SUBSETS}
    jobs = {subset: plan_shards(entries[subset], subset, opts.clips(subset), shard_videos, opts.shard_seed)
            for subset in SUBSETS}
    record = asdict(opts) | {"classes": sorted(classes) if classes else None, "shard_videos": shard_videos,
                             "inputs": inputs_fingerprint(videos, splits, split,
                                                          [j for subset in SUBSETS for j in jobs[subset]])}
    return IngestPlan(opts, entries, jobs, record)
