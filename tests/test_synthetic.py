"""The synthetic mini-UCF101: real decodable XviD AVIs, official list format, disjoint groups,
deterministic, and a class design where one frame cannot tell motion and flow cannot tell
appearance."""
import hashlib
from pathlib import Path
import shutil

import av
import numpy as np
import pytest

from ingest.decode import decode_video
from ingest.synthetic import (HUES, LUMA, _colour, class_names, class_specs, generate, is_complete, main,
                              write_split_lists)
from ingest.ucf101 import read_classes, read_split
from tests.layout import SYNTHETIC_TEST_SET


def test_naming_lists_and_codec(synthetic_videos):
    names = read_classes(synthetic_videos / "ucfTrainTestlist")
    assert names == class_names(8) == ["RedLeft", "RedRight", "RedUp", "RedDown",
                                       "BlueLeft", "BlueRight", "BlueUp", "BlueDown"]
    raw = (synthetic_videos / "ucfTrainTestlist" / "trainlist01.txt").read_bytes()
    assert raw.startswith(b"RedLeft/v_RedLeft_g02_c01.avi 1\r\n")
    assert b"\r\n" in (synthetic_videos / "ucfTrainTestlist" / "testlist01.txt").read_bytes()
    avis = sorted(synthetic_videos.glob("*/v_*_g??_c??.avi"))
    assert len(avis) == 8 * 3 * 2
    with av.open(str(avis[0])) as c:
        stream = c.streams.video[0]
        assert (c.format.name, stream.codec_context.name, stream.codec_context.codec_tag) == (
            "avi", "mpeg4", "XVID")
    video = decode_video(avis[0])
    assert video.frames.shape == (24, 96, 128, 3) and video.fps == 25
    assert is_complete(synthetic_videos, **SYNTHETIC_TEST_SET)


def test_groups_disjoint_in_every_split(synthetic_videos):
    lists = synthetic_videos / "ucfTrainTestlist"
    for split in (1, 2, 3):
        train = read_split(lists, split, "train", videos=synthetic_videos)
        test = read_split(lists, split, "test", videos=synthetic_videos)
        assert {e.group for e in test} == {split}
        assert not {e.group for e in train} & {e.group for e in test}
        assert len(train) + len(test) == 48


def test_deterministic_for_a_seed(tmp_path):
    small = dict(classes=2, groups=3, clips=1, frames=12, width=64, height=48, progress=False)
    digests = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        out = generate(tmp_path / name, seed=seed, **small)
        digests.append({p.relative_to(out).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
                        for p in sorted(out.rglob("*.avi"))})
    assert digests[0] == digests[1]
    assert digests[0].keys() == digests[2].keys() and digests[0] != digests[2]
    with pytest.raises(ValueError, match="other arguments"):
        generate(tmp_path / "a", seed=0, **{**small, "frames": 13})


def test_interrupted_generation_resumes(tmp_path):
    small = dict(classes=2, groups=3, clips=1, frames=12, width=64, height=48, progress=False)
    out = generate(tmp_path / "full", **small)
    partial = tmp_path / "partial"
    shutil.copytree(out, partial)
    (partial / "synthetic.json").unlink()  # as if killed before the end
    (partial / "BlueLeft" / "v_BlueLeft_g03_c01.avi").unlink()
    (partial / "synthetic.partial.json").write_text((out / "synthetic.json").read_text())
    generate(partial, **small)
    assert (partial / "BlueLeft" / "v_BlueLeft_g03_c01.avi").read_bytes() == \
        (out / "BlueLeft" / "v_BlueLeft_g03_c01.avi").read_bytes()
    assert is_complete(partial, **{k: v for k, v in small.items() if k != "progress"})
    assert not (partial / "synthetic.partial.json").exists()


def test_appearances_share_luma_so_flow_cannot_tell_them():
    lumas = [float(_colour(h) @ LUMA) for h in HUES]
    assert np.allclose(lumas, lumas[0])
    assert len({tuple(np.round(_colour(h))) for h in HUES}) == len(HUES)


def test_bad_class_count():
    with pytest.raises(ValueError, match="appearances"):
        class_names(7)
    with pytest.raises(ValueError, match="ring"):
        class_names(8, appearances=3, design="ring")
    with pytest.raises(ValueError, match="design"):
        class_names(8, design="grid")


def test_ring_design_puts_each_appearance_and_motion_in_two_classes():
    """The demo's design: one frame or the flow alone narrows 8 classes to 2 (cap 50 %)."""
    specs = class_specs(8, appearances=4, design="ring")
    assert [name for name, _, _ in specs] == ["RedLeft", "RedRight", "BlueRight", "BlueUp",
                                              "GreenUp", "GreenDown", "PurpleDown", "PurpleLeft"]
    for column in (1, 2):
        values = [spec[column] for spec in specs]
        assert len(set(values)) == 4 and all(values.count(v) == 2 for v in values)
    assert len({(a, m) for _, a, m in specs}) == 8  # appearance and motion together decide the class


def test_ring_set_from_the_command_line(tmp_path):
    out = tmp_path / "ring"
    main(["--out", str(out), "--classes", "6", "--appearances", "3", "--design", "ring", "--groups", "3",
          "--clips", "1", "--frames", "11", "--width", "48", "--height", "32"])
    assert read_classes(out / "ucfTrainTestlist") == class_names(6, 3, "ring")
    assert is_complete(out, classes=6, appearances=3, design="ring", groups=3, clips=1, frames=11,
                       width=48, height=32)
    assert not is_complete(out, classes=6, appearances=3, groups=3, clips=1, frames=11, width=48, height=32)
    frame = decode_video(out / "GreenLeft" / "v_GreenLeft_g02_c01.avi").frames[5].astype(float)
    excess = frame - frame.mean(axis=2, keepdims=True)
    assert excess[..., 1].max() > 40  # the square is green


def test_command_line(tmp_path, capsys):
    main(["--out", str(tmp_path / "cli"), "--classes", "4", "--groups", "3", "--clips", "1",
          "--frames", "11", "--width", "48", "--height", "32"])
    assert "ucfTrainTestlist" in capsys.readouterr().out
    assert read_classes(tmp_path / "cli" / "ucfTrainTestlist") == ["RedLeft", "RedRight", "BlueLeft", "BlueRight"]
    assert decode_video(tmp_path / "cli" / "BlueRight" / "v_BlueRight_g03_c01.avi").frames.shape == (11, 32, 48, 3)


def stream_features(split_dir, subset):
    """Per sample: the object's colour (strongest red and blue excess over grey in the RGB
    frame) and its motion (mean flow of the pixels moving against the background)."""
    from shards.format import STACK, decode_sample
    from shards.tarfiles import iter_shard
    colour, motion, labels = [], [], []
    for tar in sorted((split_dir / subset).glob("shard-*.tar")):
        for raw in iter_shard(tar):
            s = decode_sample(raw)
            rgb = s.rgb.astype(np.float32)
            excess = rgb - rgb.mean(axis=2, keepdims=True)
            colour.append([excess[..., 0].max(), excess[..., 2].max()])
            u, v = (s.flow[:STACK] - np.median(s.flow[:STACK]), s.flow[STACK:] - np.median(s.flow[STACK:]))
            moving = np.hypot(u, v) > 0.5
            motion.append([u[moving].mean(), v[moving].mean()] if moving.any() else [0.0, 0.0])
            labels.append(s.label)
    return np.array(colour), np.array(motion), np.array(labels)


def test_one_stream_is_capped_and_both_together_are_not(synthetic_shards):
    """The documented caps: one frame ~1/n_motions (25 %), flow ~1/n_appearances (50 %)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    train, test = stream_features(synthetic_shards, "train"), stream_features(synthetic_shards, "test")

    def accuracy(columns):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
        model.fit(np.hstack([train[c] for c in columns]), train[2])
        return (model.predict(np.hstack([test[c] for c in columns])) == test[2]).mean()

    spatial, temporal, both = accuracy([0]), accuracy([1]), accuracy([0, 1])
    assert spatial <= 0.4 and temporal <= 0.65 and both >= 0.9, (spatial, temporal, both)


OFFICIAL_LISTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ucfTrainTestlist"


def test_ucf101_class_list_gives_the_official_names_and_split_list_format(tmp_path):
    """101 classes named as UCF101's classInd.txt, lists in the official split-3 format."""
    names = class_names(101, class_list="ucf101")
    write_split_lists(tmp_path, names, groups=4, clips=1)  # what generate writes for these names
    lists = tmp_path / "ucfTrainTestlist"
    shipped = Path("ingest/ucf101_classInd.txt").read_bytes()
    assert (lists / "classInd.txt").read_bytes() == shipped  # same names, order, CRLF
    if OFFICIAL_LISTS.is_dir():
        assert shipped == (OFFICIAL_LISTS / "classInd.txt").read_bytes()
        official = (OFFICIAL_LISTS / "trainlist03.txt").read_bytes().split(b"\r\n")[0]
        assert official == b"ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 1"
    classes = read_classes(lists)
    assert len(classes) == 101 and classes[:2] == ["ApplyEyeMakeup", "ApplyLipstick"] and classes[-1] == "YoYo"
    train = (lists / "trainlist03.txt").read_bytes()
    assert train.startswith(b"ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 1\r\n")
    assert (lists / "testlist03.txt").read_bytes().startswith(b"ApplyEyeMakeup/v_ApplyEyeMakeup_g03_c01.avi\r\n")
    test = read_split(lists, 3, "test")
    assert len(test) == 101 and {e.group for e in test} == {3} and test[-1].label == 100
    assert len(read_split(lists, 3, "train")) == 303
    # 8 motions per hue, 13 equal-luma hues within range: one frame narrows a video to 8 classes
    specs = class_specs_of(101)
    assert len({a for _, a, _ in specs}) == 13 and len({m for _, _, m in specs}) == 8
    for appearance in {a for _, a, _ in specs}:
        colour = _colour(appearance)
        assert colour.max() <= 255 and colour @ LUMA == pytest.approx(100.0)
    with pytest.raises(ValueError, match="has 101 names"):
        class_names(102, class_list="ucf101")
    # real videos of the first 9 names (two hues), into lists of the same format
    out = generate(tmp_path / "nine", classes=9, class_list="ucf101", groups=3, clips=1, frames=3,
                   width=32, height=24, progress=False)
    assert read_classes(out / "ucfTrainTestlist") == classes[:9]
    assert is_complete(out, classes=9, class_list="ucf101", groups=3, clips=1, frames=3, width=32, height=24)
    assert len(read_split(out / "ucfTrainTestlist", 3, "test", videos=out)) == 9


def class_specs_of(n):
    from ingest.synthetic import read_class_list, wheel_specs
    return wheel_specs(read_class_list("ucf101")[:n])


def test_bad_class_list_names_file_and_line(tmp_path):
    bad = tmp_path / "classInd.txt"
    bad.write_text("1 A\n3 B\n")
    with pytest.raises(ValueError, match=r"classInd.txt:2: expected '2 <ClassName>'"):
        class_names(2, class_list=str(bad))
    with pytest.raises(ValueError, match="no such file"):
        class_names(2, class_list=str(tmp_path / "missing.txt"))
    with pytest.raises(SystemExit) as exit_info:  # the command line: exit 2 naming the file
        main(["--out", str(tmp_path / "out"), "--classes", "2", "--class-list", str(bad)])
    assert exit_info.value.code == 2


def test_wheel_scene_colour_tells_the_13_hues_apart_and_its_luma_does_not(tmp_path):
    """A wheel set's frame narrows a video to its hue's 8 classes from the frame's mean colour
    (the scene takes the class's hue; the group's random tint of older sets hid it), while the
    mean luma (what the flow is computed on) carries no hue."""
    out = generate(tmp_path / "wheel", classes=101, class_list="ucf101", groups=3, clips=1, frames=1,
                   width=32, height=24, progress=False)
    lists = out / "ucfTrainTestlist"
    features, hues, groups = [], [], []
    for label, name in enumerate(read_classes(lists)):
        for group in (1, 2, 3):
            frame = decode_video(out / name / f"v_{name}_g{group:02d}_c01.avi").frames[0].astype(float)
            mean = frame.reshape(-1, 3).mean(axis=0)
            features.append(np.r_[mean / (mean @ LUMA), mean @ LUMA])  # chromaticity, then luma
            hues.append(label // 8)
            groups.append(group)
    features, hues, groups = np.array(features), np.array(hues), np.array(groups)

    def nearest_hue_centroid(columns):  # centroids from groups 1 and 2, tested on group 3's scenes
        train, test = groups != 3, groups == 3
        centroids = np.array([features[train & (hues == h)][:, columns].mean(axis=0) for h in range(13)])
        distances = ((features[test][:, None, columns] - centroids[None]) ** 2).sum(axis=-1)
        return (distances.argmin(axis=1) == hues[test]).mean()

    assert nearest_hue_centroid([0, 1, 2]) >= 0.95  # 13 hues: chance 0.08
    assert nearest_hue_centroid([3]) <= 0.3
