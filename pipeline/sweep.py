"""The whole experiment as one command (what ``ray job submit`` runs on a cluster).

    python -m pipeline.sweep --config ray_configs/demo.yaml [--address ADDR] [--resume]
                             [--stages train fuse]

Reads the typed config, connects to a Ray cluster (``--address``, ``ray.address``, or the
``RAY_ADDRESS`` a Ray job sets) or starts an embedded local Ray, writes
``<root>/experiment.json`` (config, git commit, start time), runs the configured stages in
order, and prints where the results are and the accuracy table. Stages from folders that
build on ``training`` are imported by name; one whose module does not exist yet is
reported as not available and skipped.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import ray

from core.damaged import set_aside_damaged, set_aside_damaged_inputs
from core.atomic import atomic_file
from core.results import read_table
from core.cli import HelpFormatter
from core.diskspace import DiskFull, disk_full, free_bytes, full_path, is_disk_full
from core.interrupt import Interrupted, as_interrupted, reclaim_signals, stop_on_signals
from core.lock import FolderLocked, folder_lock, lock_problem
from core.threads import local_ray_options

from pipeline.budget import describe_budgets
from core.config import ConfigError, ExperimentConfig, config_hash, dotted_keys
from core.overrides import load_config
from pipeline.preflight import PreflightFailed, gpu_problem, gpu_request, preflight, ray_gpus
from core.provenance import device_info, git_commit, versions
from pipeline.stages import STAGES, SweepContext, run_stage_task, stage_target
from pipeline.tune_state import ResumeRefused, check_resume_root
from pipeline.validation import validate

TUNE_EXPERIMENTS = {"train": "train", "prune": "prune"}  # stage → its Tune experiment name


def write_experiment_record(cfg: ExperimentConfig, stages: list[str], resume: bool) -> Path:
    path = cfg.paths.root / "experiment.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    from training.models import weights_name  # torchvision's weights enums: names only, nothing downloaded
    record = {"config": cfg.to_dict(), "config_hash": config_hash(cfg), "git_commit": git_commit(),
              "weights": weights_name(cfg.model.arch, cfg.model.weights),
              "stages": stages, "resume": resume,
              "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": sys.argv, "versions": versions(), "device": device_info()}
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2))
    return path


CONFIG_RECORD = "config.json"


class ConfigChanged(ConfigError):
    """The experiment root holds results of another config (the message names the keys)."""


def _read_as_today(recorded: dict) -> dict:
    """A root's recorded config read again with today's schema. A setting added since the root
    was made takes its default there (a new setting defaults to what the code did before it),
    so an upgrade does not refuse a finished root for keys it never had; one that today's
    schema cannot read (a key removed or renamed) is compared as it was written."""
    try:
        return ExperimentConfig.from_dict(recorded).to_dict()
    except ConfigError:
        return recorded


def check_config(cfg: ExperimentConfig, write: bool = True) -> None:
    """Refuse to mix results of two configs in one root; remember the config (and its hash).

    A change that only adds stages or runs (``stages`` a superset, ``train.runs`` larger) is
    allowed: the results so far stay valid and a rerun adds to them. So is a root recorded by an
    older version whose config lacks settings added since, where this config leaves them at
    their defaults. Call with the root locked
    (or with ``write=False``: the check alone, nothing written).
    """
    path = cfg.paths.root / CONFIG_RECORD
    record = {"config_hash": config_hash(cfg), "config": cfg.to_dict()}
    if path.is_file():
        found = json.loads(path.read_text())
        if found["config_hash"] != record["config_hash"]:
            old, new = dotted_keys(_read_as_today(found["config"])), dotted_keys(record["config"])
            changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
            additive = {"stages": set(old.get("stages") or []) <= set(new.get("stages") or []),
                        "train.runs": (new.get("train.runs") or 0) >= (old.get("train.runs") or 0)}
            refused = [k for k in changed if not additive.get(k, False)]
            if refused:
                raise ConfigChanged(
                    f"{cfg.paths.root} holds results of another config (hash {found['config_hash']}, "
                    f"now {record['config_hash']}); changed:\n"
                    + "\n".join(f"  {k}: was {old.get(k)!r}, now {new.get(k)!r}" for k in refused)
                    + "\nuse another experiment.name / experiment.root, or delete the old root")
    if write:
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(record, indent=2, sort_keys=True))


def closing_summary(root: Path, config: dict) -> str:
    """What the sweep prints last: the findings per model and chain, in words (the report's
    opening table), then accuracy per model, chain and step as a plain-text table."""
    from analysis import findings, readable

    table = accuracy_table(root / "results")
    if table.is_empty():
        return "no accuracy rows yet"
    shown = readable.readable(table, "%")
    widths = [max(len(c), *(len(v) for v in shown[c])) for c in shown.columns]
    lines = ["  ".join(c.rjust(w) for c, w in zip(shown.columns, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in shown.iter_rows()]
    return findings.terminal_text(findings.for_experiment(root, config)) + "\n\n" + "\n".join(lines)


def accuracy_table(results: Path) -> pl.DataFrame:
    """Video accuracy per stream / fusion method and pruning step, over runs."""
    from analysis.stats import with_chain
    from analysis.summary import model_label, study_rank

    table = read_table(results, "accuracy")
    if table.is_empty():
        return pl.DataFrame()
    table = with_chain(table).with_columns(pl.struct("stream", "fusion").map_elements(
        lambda r: model_label(r["stream"], r["fusion"]), return_dtype=pl.String).alias("model"))
    order = sorted(table["model"].unique().to_list(), key=study_rank)
    return (table.group_by("model", "chain", "step")
            # measured, not the schedule's target: a finetune_only control removes none
            .agg(pl.len().alias("runs"), (100 * pl.col("channels_removed").fill_null(pl.col("prune_ratio")))
                 .mean().alias("channels_removed_%"),
                 pl.col("video_accuracy").mean().alias("video_accuracy_mean"),
                 pl.col("video_accuracy").std().alias("video_accuracy_sd"),
                 pl.col("clip_accuracy").mean().alias("clip_accuracy_mean"))
            .sort(pl.col("model").replace_strict(order, list(range(len(order)))), "chain", "step")
            # flagged, never silent: a cell that averages over fewer runs than the others
            .with_columns((pl.col("runs") < pl.col("runs").max()).alias("fewer_runs")))


class ClusterError(RuntimeError):
    """A Ray cluster this sweep cannot run on safely (the message says how to fix it)."""


def check_node_temp_dirs() -> None:
    """Refuse a cluster whose nodes on one host share a Ray temp dir.

    Such nodes share one session folder, and with it the unpacked ``working_dir`` of a job
    (``ray job submit --working-dir``): a node setting the package up for its first task
    deletes and unpacks it again under the driver and the other nodes' workers. The driver
    then lost its working directory (Intel oneMKL, initialised by ``import torch``, died with
    "Cannot load libtorch_cpu.so") or imported modules from elsewhere. Separate machines never
    share a temp dir; several nodes on one machine need ``ray start --temp-dir`` each.
    """
    sessions: dict[tuple[str, Path], list[str]] = {}
    for node in ray.nodes():
        if node["Alive"]:
            session = Path(node["RayletSocketName"]).parent.parent  # <temp>/session_*/sockets/raylet
            sessions.setdefault((node["NodeManagerAddress"], session), []).append(node["NodeID"][:12])
    shared = [(host, session, ids) for (host, session), ids in sessions.items() if len(ids) > 1]
    if shared:
        host, session, ids = shared[0]
        raise ClusterError(f"Ray nodes {ids} on host {host} share the temp dir {session.parent}: a job's "
                           f"working_dir is unpacked there once for all of them and replaced under "
                           f"running processes. Start each node on one host with its own "
                           f"`ray start --temp-dir DIR`.")


def connect_ray(cfg: ExperimentConfig, address: str | None) -> bool:
    """Connect to a cluster or start a local Ray; True if this call started or joined one."""
    if ray.is_initialized():
        return False
    address = address or cfg.ray.address
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address)  # None: the RAY_ADDRESS of a submitted job
        check_node_temp_dirs()
    else:
        # workers at niceness 0, not Ray's 15: a fair share beside other jobs (core.threads)
        ray.init(num_cpus=cfg.ray.num_cpus, include_dashboard=False, **local_ray_options())
    reclaim_signals()  # ray.init's SIGTERM handler exits 15 at once; ours stops the sweep cleanly
    return True


# Stages whose work is not spread over Ray trials or tasks by the stage itself run whole as one
# Ray task (CPUs only): the driver, a job's entrypoint on the head node, never makes videos,
# reads shards or scores, fits or builds models. It only plans and waits.
TASK_STAGES = ("data", "report")  # fuse spreads its (run, step) pairs over Ray tasks itself


def run_stage(stage: str, cfg: ExperimentConfig, ctx: SweepContext) -> None:
    """Run one stage: a ``TASK_STAGES`` stage as a Ray task (on any node with a CPU free),
    the others (Tune or their own tasks) here."""
    if stage in TASK_STAGES:
        task = ray.remote(num_cpus=1, num_gpus=0, max_retries=0)(run_stage_task)
        ray.get(task.remote(stage, cfg.to_dict(), ctx.resume))
    else:
        STAGES[stage](cfg, ctx)


def run_sweep(cfg: ExperimentConfig, *, stages: list[str] | None = None, resume: bool = False,
              address: str | None = None) -> SweepContext:
    stages = list(stages or cfg.stages)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stages {unknown}; known: {list(STAGES)}")
    validate(cfg, stages)  # every value range-checked before anything is written or Ray starts
    # trials and tasks run in other working directories: give them an absolute root
    cfg.experiment.root = str(cfg.paths.root)
    # everything the stages need, before anything is written or Ray starts (weights downloaded now)
    # read-only first: the root's refusals (held, another config, foreign Tune state), then what is missing
    problems = [p for p in [lock_problem(cfg.paths.root)] if p]
    try:
        check_config(cfg, write=False)
        for stage in stages if resume else ():
            if stage in TUNE_EXPERIMENTS:
                check_resume_root(cfg, TUNE_EXPERIMENTS[stage])
    except (ConfigChanged, ResumeRefused) as exc:
        problems.append(str(exc))
    report = preflight(cfg, stages, dry_run=bool(problems), address=address)  # downloads only if all else is fine
    if problems + report.problems:
        raise PreflightFailed(problems + report.problems)
    ctx = SweepContext(config=cfg, paths=cfg.paths, resume=resume)
    with folder_lock(cfg.paths.root, what="sweep"):
        if resume:  # before anything is written or Ray starts: refuse Tune state another root wrote
            for stage in stages:
                if stage in TUNE_EXPERIMENTS:
                    check_resume_root(cfg, TUNE_EXPERIMENTS[stage])
        check_config(cfg)
        # "done" is what the results store holds, readable: a damaged part is set aside here,
        # so the stage that writes it does that unit of work again (core.damaged)
        set_aside_damaged(cfg.paths.results)
        set_aside_damaged_inputs(cfg.paths.root)  # checkpoints and scores: their cells rerun
        _run_stages(cfg, ctx, stages, resume, address)
    return ctx


def _run_stages(cfg: ExperimentConfig, ctx: SweepContext, stages: list[str], resume: bool,
                address: str | None) -> None:
    started_ray = connect_ray(cfg, address)
    finished: list[str] = []
    try:
        if gpu_request(cfg):  # a trial asking for GPUs the cluster lacks would wait forever
            if problem := gpu_problem(cfg, "the Ray cluster", *ray_gpus()):
                raise PreflightFailed([problem])
        record = write_experiment_record(cfg, stages, resume)
        print(f"experiment {cfg.experiment.name}: {record}")
        for number, stage in enumerate(stages, 1):
            progress = f"stage {stage} ({number}/{len(stages)})"
            print(f"{progress}: running" + (" as a Ray task" if stage in TASK_STAGES else ""), flush=True)
            t0 = time.perf_counter()
            try:
                run_stage(stage, cfg, ctx)
            except KeyboardInterrupt as exc:  # Ctrl-C / SIGTERM: no further stage; main says how to continue
                stopped = as_interrupted(exc)
                stopped.stage, stopped.finished = progress, finished
                raise stopped from None
            except Exception as exc:
                if full := stage_disk_full(cfg, stage, progress, exc):
                    raise full from exc
                raise
            finished.append(stage)
            print(f"{progress}: done in {time.perf_counter() - t0:.0f} s", flush=True)
    finally:
        if started_ray:
            ray.shutdown()


NEARLY_FULL = 64 * 2**20  # free bytes under which a disk counts as full when a stage fails


def stage_disk_full(cfg: ExperimentConfig, stage: str, progress: str, exc: BaseException) -> DiskFull | None:
    """A stage that failed on a full disk: the folder of the file that failed (else the root),
    its free space, and what the cost plan expects the stage to write (``pipeline.cost_plan``).

    A write that found no space may surface as another error: Tune, which could not write a
    failed trial's error file, fails reading it back (``EOFError``). So an error that is not
    ENOSPC counts too when the folder's disk is nearly full (under ``NEARLY_FULL`` free, and
    less than the stage needs), saying what failed; otherwise None: not a full disk.
    """
    file = full_path(exc)
    folder = Path(file).parent if file else cfg.paths.root
    try:
        from pipeline.cost_plan import stage_disk_need
        needed, what = stage_disk_need(cfg, stage)
    except Exception:  # no split lists or manifest to count from
        needed, what = None, None
    detail = None
    if not is_disk_full(exc):
        if free_bytes(folder) >= min(needed or NEARLY_FULL, NEARLY_FULL):
            return None
        summary = (str(exc).strip().splitlines() or [""])[0][:200]
        detail = f"the stage failed with {type(exc).__name__}: {summary}, after its writes ran out of space"
    if needed is None:
        return disk_full(folder, what=progress, file=file, detail=detail)
    return disk_full(folder, needed=needed, what=progress, basis=f"cost plan: {what}", file=file, detail=detail)


def describe_plan(cfg: ExperimentConfig, stages: list[str], address: str | None) -> str:
    """What a sweep would do, as text (``--dry-run``); touches neither Ray nor the disk."""
    target = address or cfg.ray.address or os.environ.get("RAY_ADDRESS") \
        or f"embedded local Ray ({cfg.ray.num_cpus or 'all'} CPUs)"
    lines = [f"experiment: {cfg.experiment.name}", f"config_hash: {config_hash(cfg)}",
             f"root: {cfg.paths.root}", f"results: {cfg.paths.results}", f"ray: {target}",
             "stages:"]
    lines += [f"  {i}. {stage:8s} {stage_target(stage)}" for i, stage in enumerate(stages, 1)]
    if "train" in stages or "prune" in stages:
        lines += describe_budgets(cfg)
    return "\n".join(lines)


EPILOG = """exit codes: 0 done (or config printed / plan shown); 1 a stage failed (a full disk
among them: the folder, its free space, what the stage needs); 130 stopped by Ctrl-C (SIGINT), 143 by SIGTERM: no
further stage starts, trials and tasks are stopped, the lock is released, and the same
command continues (finished work is kept); a second Ctrl-C exits at once;
2 bad command line or config (unknown --set key, wrong value type, unreadable yaml), something
a stage needs that is missing (pipeline.preflight: weights, videos, disk, GPUs, a writable root), a root
locked by another sweep or holding another config's results, or --resume of Tune state this
root did not write."""


def interrupted_line(exc: Interrupted, argv: list[str]) -> str:
    """One line: what stopped the sweep, which stages finished, the command that continues."""
    finished = getattr(exc, "finished", [])
    where = f" during {exc.stage}" if getattr(exc, "stage", None) else ""
    return (f"sweep stopped by {exc.name}{where}; finished stages: {', '.join(finished) or 'none'} "
            f"(their results are kept, and so is every finished trial or task of the stopped stage); "
            f"continue with: python -m pipeline.sweep {shlex.join(argv)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crossroads-sweep", description=__doc__.split("\n\n")[0],
                                     epilog=EPILOG,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--config", required=True, type=Path, help="ray_configs/<name>.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (YAML-typed, repeatable), e.g. train.lr=0.01")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config as yaml and exit")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan (stages, root, Ray target), what the preflight found "
                             "(videos, classes, trials per stage, weights cached, shard size estimate, "
                             "problems) and the cost plan (passes per stage, GPU-hours, disk, ingest "
                             "CPU-hours: pipeline.cost_plan) and exit; no Ray, no download, nothing written")
    parser.add_argument("--json", type=Path, metavar="FILE", help="with --dry-run: also write the cost plan as JSON")
    parser.add_argument("--clips-per-second", metavar="INF,TRAIN",
                        help="with --dry-run: measured clips/s of ResNet-101 at 224 px (inference, training) "
                             "instead of the assumed 4500,1500")
    parser.add_argument("--address", help="Ray cluster address (default: ray.address, RAY_ADDRESS, "
                                          "else an embedded local Ray)")
    parser.add_argument("--resume", action="store_true", help="restore an interrupted experiment")
    parser.add_argument("--stages", nargs="+", metavar="STAGE", choices=list(STAGES),
                        help="run only these stages (default: the config's `stages`)")
    args = parser.parse_args(argv)
    try:
        checked = args.stages
        if args.dry_run:  # a plan reads the split lists, never the videos: check the rest
            checked = [stage for stage in (args.stages or load_config(args.config, args.overrides).stages)
                       if stage != "data"]
        cfg = validate(load_config(args.config, args.overrides), checked)
    except ConfigError as exc:
        parser.error(str(exc))
    if args.print_config:
        import yaml
        print(f"# config_hash: {config_hash(cfg)}")
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    if args.dry_run:
        from pipeline.cost_plan import parse_clips_per_second, plan, render
        try:
            rates = parse_clips_per_second(args.clips_per_second) if args.clips_per_second else None
        except ValueError as exc:
            parser.error(str(exc))
        stages = list(args.stages or cfg.stages)
        print(describe_plan(cfg, stages, args.address))
        cfg.experiment.root = str(cfg.paths.root)
        report = preflight(cfg, stages, dry_run=True, address=args.address)
        print(report)
        try:
            cost = plan(dataclasses.replace(cfg, stages=stages), clips_per_second=rates)
        except (ValueError, OSError) as exc:  # no split lists or manifest to count videos from
            print(f"cost plan: not made: {exc}", file=sys.stderr)
            return 2 if args.json or report.problems else 0
        print(render(cost))
        if args.json:
            args.json.write_text(json.dumps(cost, indent=1) + "\n")
        return 2 if report.problems else 0
    # Ctrl-C stops the sweep, not just Tune's current stage (Tune would save and return, and
    # the next stage would start on missing inputs)
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    with stop_on_signals():
        try:
            ctx = run_sweep(cfg, stages=args.stages, resume=args.resume, address=args.address)
        except PreflightFailed as exc:
            for problem in exc.problems:
                print(f"error: {problem}", file=sys.stderr)
            return 2
        except (ClusterError, ConfigChanged, FolderLocked, ResumeRefused) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except DiskFull as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:  # the root's lock, config.json, experiment.json: before any stage
            if not is_disk_full(exc):
                raise
            print(f"error: {disk_full(cfg.paths.root, file=full_path(exc))}", file=sys.stderr)
            return 1
        except KeyboardInterrupt as exc:
            stopped = as_interrupted(exc)
            print(interrupted_line(stopped, sys.argv[1:] if argv is None else argv), file=sys.stderr, flush=True)
            return stopped.exit_code
    print(f"results: {ctx.paths.results}")
    print(closing_summary(ctx.paths.root, cfg.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
