"""#25 point 4: everything a sweep needs is checked before its first stage (pipeline.preflight).

One message per problem, exit 2, no traceback, nothing written under the experiment root; the
dry run reports what it found without Ray, a download or a file written. No Ray is started
here: every sweep below stops in the preflight. A failing download is a real one, sent to a
closed local port (``https_proxy``), so it fails the same with or without internet.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray
import yaml

from ingest.preflight import check_data_stage
from shards.format import clip_bytes
from core.config import ExperimentConfig
from pipeline.preflight import (gpu_problem, local_gpus, preflight, pretrained_source, root_problem,
                                weight_sources)
from pipeline.sweep import main

CLASSES = ["ApplyEyeMakeup", "ApplyLipstick", "Archery"]
CLOSED_PORT_PROXY = "http://127.0.0.1:9"  # discard port: nothing listens, the connection is refused


@pytest.fixture
def ucf_tree(shared_data, tmp_path):
    """The real split-3 lists and, for 3 classes, a UCF-101 tree of links to a real clip."""
    clip = shared_data / "real_videos" / "v_ApplyEyeMakeup_sample.avi"
    videos = tmp_path / "UCF-101"
    for name in ("trainlist03.txt", "testlist03.txt"):
        for line in (shared_data / "ucfTrainTestlist" / name).read_text().splitlines():
            rel = line.split()[0] if line.strip() else ""
            if rel.split("/")[0] in CLASSES:
                (videos / rel).parent.mkdir(parents=True, exist_ok=True)
                (videos / rel).symlink_to(clip)
    return videos, shared_data / "ucfTrainTestlist"


def config(root: Path, **sections) -> ExperimentConfig:
    data = {"synthetic": {"classes": 4, "groups": 3, "clips": 1, "frames": 12, "width": 48, "height": 36},
            "split": 1, "clips_per_video": 2, "test_clips": 2}
    raw = {"experiment": {"name": "pre", "root": str(root)}, "data": data,
           "ray": {"num_cpus": 1, "gpus_per_trial": 0}, "stages": ["data", "train"]}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return ExperimentConfig.from_dict(raw)


def sweep(cfg: ExperimentConfig, tmp_path: Path, capsys, *extra: str) -> tuple[int, str, str]:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    rc = main(["--config", str(path), *extra])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def empty_torch_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, CLOSED_PORT_PROXY)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def test_weights_not_cached_nor_downloadable_exit_2_before_any_stage(tmp_path, capsys, empty_torch_cache):
    root = tmp_path / "root"
    cfg = config(root, model={"arch": "resnet18", "weights": "imagenet"})
    rc, out, err = sweep(cfg, tmp_path, capsys)
    assert rc == 2, out + err
    url = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and url in lines[0] and str(empty_torch_cache / "resnet18-f37072fd.pth") in lines[0]
    assert "model.weights: PATH" in lines[0] and "Traceback" not in err
    assert not root.exists() and not ray.is_initialized()  # nothing written, no stage, no Ray
    assert "stage data" not in out


def test_dry_run_reports_what_it_found_and_writes_nothing(tmp_path, capsys, empty_torch_cache, ucf_tree):
    videos, splits = ucf_tree
    root = tmp_path / "root"
    cfg = config(root, data={"synthetic": None, "videos": str(videos), "splits": str(splits), "split": 3,
                             "classes": CLASSES, "train_clips_stored": 5, "test_clips": 25, "short_side": 128},
                 model={"arch": "resnet18", "weights": "imagenet"}, train={"runs": 3},
                 stages=["data", "train", "prune"], prune={"steps": 2})
    rc, out, _ = sweep(cfg, tmp_path, capsys, "--dry-run")
    assert rc == 0, out
    train, test = 108 + 81 + 107, 37 + 33 + 38  # the 3 classes' lines in trainlist03 / testlist03 (grep -c)
    assert f"videos: {train + test} ({train} train, {test} test), classes: 3" in out
    clips = train * 5 + test * 25
    assert f"{clips:,} clips" in out and "320×240 sources at short side 128" in out
    assert "train: 6 Tune trials (2 streams × 3 runs)" in out and "prune: 6 Tune trials of 2 steps each" in out
    assert "weights resnet18 imagenet: not cached" in out
    assert not root.exists() and not empty_torch_cache.exists() and not ray.is_initialized()


def test_missing_videos_are_named_unless_allowed(tmp_path, capsys, ucf_tree):
    videos, splits = ucf_tree
    gone = ["Archery/v_Archery_g01_c01.avi", "ApplyLipstick/v_ApplyLipstick_g03_c02.avi"]
    for rel in gone:
        (videos / rel).unlink()
    cfg = config(tmp_path / "root", data={"synthetic": None, "videos": str(videos), "splits": str(splits),
                                          "split": 3, "classes": CLASSES})
    rc, _, err = sweep(cfg, tmp_path, capsys)
    assert rc == 2 and "Traceback" not in err
    for rel in gone:
        assert sum(str(videos / rel) in line for line in err.splitlines()) == 1, err
    assert "2 listed videos are missing" in err and "data.allow_missing" in err
    assert not (tmp_path / "root").exists()
    allowed = config(tmp_path / "root", data={"synthetic": None, "videos": str(videos), "splits": str(splits),
                                              "split": 3, "classes": CLASSES, "allow_missing": True})
    check = check_data_stage(allowed)
    assert check.problems == [] and "missing videos: 2" in " ".join(check.facts)


def test_unwritable_root_is_refused(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert "is not a folder" in root_problem(blocker / "root", probe=False)
    # permission bits do not stop root; a file system that refuses files does (the probe)
    assert "not writable" in root_problem(Path("/proc/crossroads-root"), probe=True)
    rc, _, err = sweep(config(blocker / "root"), tmp_path, capsys)
    assert rc == 2 and f"experiment.root: {blocker / 'root'} cannot be made" in err and "Traceback" not in err
    assert root_problem(tmp_path / "new" / "root", probe=True) is None and not (tmp_path / "new").exists()


@pytest.mark.skipif(local_gpus() > 0, reason="this machine has a GPU")
def test_gpus_asked_for_on_a_machine_without_is_an_error_not_a_hang(tmp_path, capsys):
    rc, _, err = sweep(config(tmp_path / "root", ray={"gpus_per_trial": 1}), tmp_path, capsys)
    assert rc == 2 and "ray.gpus_per_trial: 1 asks for GPUs" in err and "has none" in err
    assert not (tmp_path / "root").exists() and not ray.is_initialized()


def test_gpu_problem_on_a_cluster():
    cfg = config(Path("/tmp/x"), ray={"gpus_per_trial": 2})
    assert "has none" in gpu_problem(cfg, "the Ray cluster", 0.0, 0.0)
    assert "no node of the Ray cluster has 2 GPUs" in gpu_problem(cfg, "the Ray cluster", 4.0, 1.0)
    assert gpu_problem(cfg, "the Ray cluster", 4.0, 2.0) is None
    assert gpu_problem(config(Path("/tmp/x")), "the Ray cluster", 0.0, 0.0) is None  # CPUs asked for
    assert "train.device: cuda" in gpu_problem(config(Path("/tmp/x"), train={"device": "cuda"}), "here", 0.0)


def test_too_little_disk_for_the_shards(tmp_path):
    # 101 classes x 300 groups of 8000 x 6000 frames: far more than any test machine's disk
    huge = {"classes": 101, "class_list": "ucf101", "groups": 300, "clips": 1, "width": 8000, "height": 6000}
    check = check_data_stage(config(tmp_path / "root", data={"synthetic": huge, "test_clips": 25}))
    assert len(check.problems) == 1 and check.problems[0].startswith("disk: the shards need about")
    assert f"free at {tmp_path}" in " ".join(check.facts)
    assert check.shard_bytes > check.free_bytes


def test_clip_size_estimate_matches_the_measured_sizes():
    """docs/ARCHITECTURE.md, "Shard format": real clips at short side 256 ≈ 96 KiB, 64 ≈ 11 KiB,
    source 320×240 ≈ 89 KiB."""
    assert clip_bytes(320, 240, 256) / 1024 == pytest.approx(96, rel=0.05)
    assert clip_bytes(320, 240, 64) / 1024 == pytest.approx(11, rel=0.05)
    assert clip_bytes(320, 240, None) / 1024 == pytest.approx(89, rel=0.1)


def test_flow_backends_this_machine_lacks(tmp_path, empty_torch_cache):
    import cv2
    tvl1 = check_data_stage(config(tmp_path / "root", data={"flow": "tvl1"})).problems
    assert tvl1 == [] if hasattr(cv2, "optflow") else ("needs cv2.optflow" in tvl1[0] and len(tvl1) == 1)
    raft = check_data_stage(config(tmp_path / "root", data={"flow": "raft_small"})).problems
    assert len(raft) == 1 and "no weights in torchvision's cache" in raft[0] and str(empty_torch_cache) in raft[0]


def test_shards_in_list_order_or_missing_are_problems(tmp_path):
    cfg = config(tmp_path / "root")
    parts = cfg.paths.shards / ".parts"
    parts.mkdir(parents=True)
    (parts / "options.json").write_text(json.dumps({"split": 1, "seed": 0}))  # before #25: no shard_seed
    assert any("built in list order" in p for p in preflight(cfg, ["data", "train"], dry_run=True).problems)
    problems = preflight(cfg, ["train"], dry_run=True).problems
    assert len(problems) == 1 and "manifest.parquet not found" in problems[0]


def test_weights_go_through_one_source(tmp_path):
    assert pretrained_source("resnet18", "none") is None
    local = tmp_path / "w.pt"
    source = pretrained_source("resnet18", str(local))
    assert source.url is None and source.path == local and not source.cached
    cfg = config(tmp_path / "root", model={"weights": str(local)})
    assert weight_sources(cfg, ["prune", "fuse"]) == []  # later stages load checkpoints
    [only] = weight_sources(cfg, ["train"])  # both streams, one file
    assert only.path == local
    problems = preflight(cfg, ["train"], dry_run=True).problems
    assert any(f"{str(local)!r} is no file" in p for p in problems)


def test_the_ingest_the_preflight_and_the_cost_plan_estimate_the_shards_alike(tmp_path):
    """One estimate of a stored clip's bytes (shards.format.clip_bytes) behind all three: the
    ingest's plan, the data stage's preflight and the sweep's cost plan give the same bytes."""
    from ingest.shard_plan import Options, ShardJob, planned_bytes
    from ingest.ucf101 import VideoEntry
    from pipeline.cost_plan import disk_estimate
    synthetic = {"classes": 4, "groups": 3, "clips": 2, "width": 320, "height": 240}
    cfg = config(tmp_path / "root", data={"synthetic": synthetic, "short_side": 128, "clips_per_video": 2,
                                          "test_clips": 3})
    check = check_data_stage(cfg)
    plan = disk_estimate(cfg)
    assert check.shard_bytes == pytest.approx(plan["shards_bytes"], abs=1)
    train, test = check.train, check.test
    jobs = [ShardJob("train", 0, tuple(VideoEntry(f"v{i}.avi", "A", 0, 1, i) for i in range(train))),
            ShardJob("test", 0, tuple(VideoEntry(f"w{i}.avi", "A", 0, 2, i) for i in range(test)))]
    ingest = planned_bytes(jobs, Options(split=1, clips_per_video=2, test_clips=3, short_side=128))
    assert ingest == pytest.approx(plan["shards_bytes"], abs=1)  # UCF101's 320x240, as the set's frames
    assert plan["bytes_per_clip"] == round(clip_bytes(320, 240, 128)) == round(5.4 * 1024 + 1.06 * 171 * 128)
