"""build_shards end to end on one UCF101-style folder: the three real clips, a textured
object moving a known number of px/frame, a video shorter than a clip, and three bad files."""
import json
import os
import shutil
import socket
import subprocess

import numpy as np
import polars as pl
import pytest

from ingest.build_shards import IngestFailed, build_shards, main
from ingest.synthetic import _write_avi
from core.lock import LOCK_NAME
from shards.format import STACK, decode_sample, quantisation_step
from shards.tarfiles import iter_shard
from tests.flow_fields import SHIFT, interior_median, translating

REAL = {"ApplyEyeMakeup": ("v_ApplyEyeMakeup_sample.avi", 164, 320, 240),
        "ArmWrestling": ("armwrestling_340x256.mp4", 280, 340, 256),
        "Basketball": ("basketball_426x240.mp4", 300, 426, 240)}
CLASSES = [*REAL, "Translate", "Broken"]
BAD = {"v_Broken_g02_c01.avi": "zero-byte", "v_Broken_g02_c02.avi": "truncated",
       "v_Broken_g02_c03.avi": "text"}


@pytest.fixture(scope="module")
def ucf_folder(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("ucf")
    videos, lists = root / "videos", root / "lists"
    for name in CLASSES:
        (videos / name).mkdir(parents=True)
    test, train = [], []
    for name, (src, *_rest) in REAL.items():
        rel = f"{name}/v_{name}_g01_c01.avi"  # the mp4s keep their content; FFmpeg probes it
        shutil.copy(shared_data / "real_videos" / src, videos / rel)
        test.append(rel)
    _write_avi(videos / "Translate/v_Translate_g02_c01.avi", translating(30, 96, 128), fps=25)
    _write_avi(videos / "Translate/v_Translate_g02_c02.avi", translating(7, 96, 128), fps=25)
    train += ["Translate/v_Translate_g02_c01.avi 4", "Translate/v_Translate_g02_c02.avi 4"]
    real = (shared_data / "real_videos" / REAL["ApplyEyeMakeup"][0]).read_bytes()
    (videos / "Broken" / "v_Broken_g02_c01.avi").write_bytes(b"")
    (videos / "Broken" / "v_Broken_g02_c02.avi").write_bytes(real[: len(real) // 2])
    (videos / "Broken" / "v_Broken_g02_c03.avi").write_text("not a video at all\n")
    train += [f"Broken/{name} 5" for name in BAD]
    lists.mkdir()
    crlf = lambda lines: "".join(l + "\r\n" for l in lines).encode()
    (lists / "classInd.txt").write_bytes(crlf(f"{i} {c}" for i, c in enumerate(CLASSES, 1)))
    (lists / "trainlist01.txt").write_bytes(crlf(train))
    (lists / "testlist01.txt").write_bytes(crlf(test))
    return videos, lists


@pytest.fixture(scope="module")
def built(ucf_folder, local_ray, tmp_path_factory):
    out = tmp_path_factory.mktemp("built") / "split1"
    summary = build_shards(*ucf_folder, 1, out, clips_per_video=2, test_clips=5, short_side=64,
                           shard_videos=2, progress=False)
    return out, summary


def samples(out):
    return {s.key: s for tar in sorted(out.glob("*/shard-*.tar"))
            for s in (decode_sample(raw, str(tar)) for raw in iter_shard(tar))}


def test_bad_files_are_recorded_and_lose_nothing(built):
    out, summary = built
    assert (summary.ok, summary.failed, summary.samples) == (5, 3, 3 * 5 + 2 * 2)
    manifest = pl.read_parquet(out / "manifest.parquet")
    failed = manifest.filter(pl.col("status") == "failed")
    assert sorted(failed["video"]) == sorted(n[:-4] for n in BAD)
    for row in failed.iter_rows(named=True):
        assert row["path"] in row["error"] and row["clips"] == 0 and row["shard"] is None
    by_video = dict(zip(failed["video"], failed["error"]))
    assert "truncated" in by_video["v_Broken_g02_c02"]
    assert "Invalid data" in by_video["v_Broken_g02_c01"] and "Invalid data" in by_video["v_Broken_g02_c03"]
    assert "3 failed" in str(summary) and "v_Broken_g02_c03.avi" in str(summary)


def test_real_clips_source_metadata(built):
    out, _ = built
    manifest = pl.read_parquet(out / "manifest.parquet").filter(pl.col("subset") == "test")
    got = {r["class_name"]: (r["frames"], r["width"], r["height"]) for r in manifest.iter_rows(named=True)}
    assert got == {name: tuple(v[1:]) for name, v in REAL.items()}
    manifest = manifest.sort("label")  # shards hold a seeded permutation of the list (#25)
    assert manifest["fps"].to_list() == pytest.approx([25.0, 28.0, 30000 / 1001])
    assert set(manifest["flow_method"]) == {"dis"} and set(manifest["flow_bound"]) == {20.0}
    decoded = samples(out)
    bb = [s for k, s in sorted(decoded.items()) if k.startswith("v_Basketball")]
    assert len(bb) == 5 and bb[0].rgb.shape == (64, 114, 3) and bb[0].flow_q.shape == (20, 64, 114)
    assert [s.meta.frames[0] for s in bb] == [0, 72, 144, 217, 289]  # evenly spaced over 300 frames
    assert bb[0].meta.width == 426 and bb[0].label == 2


def test_flow_sign_and_magnitude_from_the_shard(built):
    """The texture moves 3 px right and 2 px up per frame at 128x96; the shard holds 86x64."""
    out, _ = built
    decoded = samples(out)
    for clip in (0, 1):
        flow = decoded[f"v_Translate_g02_c01__{clip:03d}"].flow
        fields = np.stack([flow[:STACK], flow[STACK:]], -1)
        expected = np.array(SHIFT) * (86 / 128, 64 / 96)
        assert np.abs(interior_median(fields) - expected).max() <= quantisation_step()


def test_short_video_is_clamped(built):
    out, _ = built
    manifest = pl.read_parquet(out / "manifest.parquet")
    row = manifest.filter(pl.col("video") == "v_Translate_g02_c02").row(0, named=True)
    assert row["clamped"] and row["frames"] == 7 and row["clips"] == 2
    sample = samples(out)["v_Translate_g02_c02__000"]
    assert sample.meta.clamped and sample.meta.frames == [0, 1, 2, 3, 4, 5, 6, 6, 6, 6, 6]
    assert np.abs(sample.flow[6:STACK]).max() <= quantisation_step()


def test_strict_fails_after_writing_everything(built, ucf_folder):
    out, _ = built
    before = {p.name: p.read_bytes() for p in out.glob("*/shard-*.tar")}
    with pytest.raises(IngestFailed, match="5 ok, 3 failed"):
        build_shards(*ucf_folder, 1, out, clips_per_video=2, test_clips=5, short_side=64,
                     shard_videos=2, strict=True, progress=False)
    assert {p.name: p.read_bytes() for p in out.glob("*/shard-*.tar")} == before
    args = ["--videos", str(ucf_folder[0]), "--splits", str(ucf_folder[1]), "--split", "1",
            "--out", str(out), "--clips-per-video", "2", "--test-clips", "5", "--short-side", "64",
            "--shard-videos", "2"]
    assert main(args + ["--strict"]) == 1 and main(args) == 0


def test_other_options_into_the_same_folder_are_refused(built, ucf_folder):
    out, _ = built
    with pytest.raises(ValueError, match=r"other options(.|\n)*clips_per_video: was 2, now 3"):
        build_shards(*ucf_folder, 1, out, clips_per_video=3, test_clips=5, short_side=64,
                     shard_videos=2, progress=False)


@pytest.mark.slow  # builds shards on a local Ray
def test_flow_options_from_the_command_line(ucf_folder, local_ray, tmp_path):
    out = tmp_path / "split1"
    args = ["--videos", str(ucf_folder[0]), "--splits", str(ucf_folder[1]), "--split", "1",
            "--out", str(out), "--classes", "Translate", "--clips-per-video", "1",
            "--short-side", "48", "--dis-preset", "ultrafast"]
    assert main(args) == 0
    assert json.loads((out / ".parts" / "options.json").read_text())["flow_options"] == {"preset": "ultrafast"}
    assert pl.read_parquet(out / "manifest.parquet")["status"].to_list() == ["ok", "ok"]
    with pytest.raises(SystemExit, match="--dis-preset is for --flow dis"):
        main(args + ["--flow", "farneback"])


def _translate_only(ucf_folder, tmp_path):
    """A private copy of the two Translate videos and the lists (tests below change them)."""
    videos, lists = tmp_path / "videos", tmp_path / "lists"
    shutil.copytree(ucf_folder[0] / "Translate", videos / "Translate")
    shutil.copytree(ucf_folder[1], lists)
    return ["--videos", str(videos), "--splits", str(lists), "--split", "1", "--out",
            str(tmp_path / "split1"), "--classes", "Translate", "--clips-per-video", "1",
            "--short-side", "48", "--flow", "farneback"], videos


@pytest.mark.slow  # builds shards on a local Ray
def test_rerun_with_other_options_or_inputs_exits_2_naming_them(ucf_folder, local_ray, tmp_path, capsys):
    args, videos = _translate_only(ucf_folder, tmp_path)
    assert main(args) == 0
    capsys.readouterr()
    assert main(args + ["--shard-videos", "1", "--test-clips", "3"]) == 2
    err = capsys.readouterr().err
    assert "shard_videos: was None, now 1" in err and "test_clips: was 25, now 3" in err
    assert "--overwrite" in err and "Traceback" not in err
    clip = videos / "Translate" / "v_Translate_g02_c01.avi"
    os.utime(clip, ns=(clip.stat().st_atime_ns, clip.stat().st_mtime_ns + 10**9))
    assert main(args) == 2
    assert "input videos/Translate/v_Translate_g02_c01.avi" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--shard-videos", "1"]) == 0
    record = json.loads((tmp_path / "split1" / ".parts" / "options.json").read_text())
    assert record["shard_videos"] == 1 and len(list((tmp_path / "split1").glob("train/shard-*.tar"))) == 2
    assert main(args + ["--shard-videos", "1"]) == 0  # same options again: resumes, nothing to do


@pytest.mark.slow  # builds shards on a local Ray
def test_failed_videos_are_retried_on_rerun_and_locks_name_their_holder(ucf_folder, local_ray,
                                                                        tmp_path, capsys):
    args, videos = _translate_only(ucf_folder, tmp_path)
    clip = videos / "Translate" / "v_Translate_g02_c02.avi"
    good = clip.read_bytes()
    clip.write_bytes(b"")
    assert main(args) == 0
    out = tmp_path / "split1"
    assert pl.read_parquet(out / "manifest.parquet")["status"].sort().to_list() == ["failed", "ok"]
    # a live holder (this very process) of the folder's lock: a second run exits 2 naming it
    (out / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                              "started": 0, "what": "ingest"}))
    capsys.readouterr()
    assert main(args) == 2
    assert f"in use by ingest pid {os.getpid()} on host {socket.gethostname()}" in capsys.readouterr().err
    # the holder is gone: its stale lock is taken over with a warning; the fixed video gets in
    dead = subprocess.Popen(["true"])
    dead.wait()
    (out / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid,
                                              "started": 0, "what": "ingest"}))
    clip.write_bytes(good)
    with pytest.warns(UserWarning, match=f"stale lock of ingest pid {dead.pid}"):
        assert main(args) == 0
    assert pl.read_parquet(out / "manifest.parquet")["status"].to_list() == ["ok", "ok"]
    assert not (out / LOCK_NAME).exists() and not list(out.rglob("*.tmp-*"))
