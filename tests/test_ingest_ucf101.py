"""Split-list parsing on the official UCF101 lists (real data)."""
import shutil

import pytest

from ingest.ucf101 import SplitListError, read_classes, read_split

COUNTS = {1: (9537, 3783), 2: (9586, 3734), 3: (9624, 3696)}


@pytest.fixture(scope="module")
def lists(shared_data):
    return shared_data / "ucfTrainTestlist"


@pytest.mark.parametrize("split", [1, 2, 3])
def test_official_counts_and_disjoint_groups(lists, split):
    train = read_split(lists, split, "train")
    test = read_split(lists, split, "test")
    assert (len(train), len(test)) == COUNTS[split]
    assert len({e.path for e in train + test}) == 13320
    # the official splits hold out whole groups: no (class, group) in both
    assert not {(e.class_name, e.group) for e in train} & {(e.class_name, e.group) for e in test}
    assert {e.label for e in train} == set(range(101)) == {e.label for e in test}


def test_labels_names_and_quirk(lists):
    classes = read_classes(lists)
    assert len(classes) == 101 and classes[0] == "ApplyEyeMakeup" and classes[-1] == "YoYo"
    train = read_split(lists, 1, "train")
    first = train[0]
    assert (first.path, first.class_name, first.label, first.group, first.clip, first.video_id) == (
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "ApplyEyeMakeup", 0, 8, 1,
        "v_ApplyEyeMakeup_g08_c01")
    # the folder is HandstandPushups, the files v_HandStandPushups_*: the class comes from the folder
    hsp = [e for e in train if e.class_name == "HandstandPushups"]
    assert hsp and all("v_HandStandPushups_" in e.path for e in hsp)
    assert {e.label for e in hsp} == {classes.index("HandstandPushups")}
    assert not any("\r" in e.path for e in train)


def test_class_subset_relabels_in_classind_order(lists):
    test = read_split(lists, 1, "test", classes=["YoYo", "Archery"])
    assert {(e.class_name, e.label) for e in test} == {("Archery", 0), ("YoYo", 1)}
    with pytest.raises(SplitListError, match="NoSuchClass"):
        read_split(lists, 1, "test", classes=["NoSuchClass"])


def test_missing_video_and_unknown_class_name_the_line(lists, tmp_path):
    videos = tmp_path / "videos"
    (videos / "ApplyEyeMakeup").mkdir(parents=True)
    with pytest.raises(SplitListError, match=r"testlist01.txt:1: video .*v_ApplyEyeMakeup_g01_c01.avi not found"):
        read_split(lists, 1, "test", videos=videos)
    with pytest.warns(UserWarning, match="not found"):
        entries = read_split(lists, 1, "test", videos=videos, classes=["ApplyEyeMakeup"],
                             allow_missing=True)
    assert len(entries) == 44  # missing videos are kept: the ingest records them as failed

    bad = tmp_path / "lists"
    shutil.copytree(lists, bad)
    with open(bad / "testlist01.txt", "ab") as f:
        f.write(b"Juggling/v_Juggling_g01_c01.avi\r\n")
    with pytest.raises(SplitListError, match=r"testlist01.txt:3784: class 'Juggling' is not in classInd"):
        read_split(bad, 1, "test")
    with pytest.warns(UserWarning, match="Juggling"):
        assert len(read_split(bad, 1, "test", allow_missing=True)) == 3783


def test_wrong_train_label_is_an_error(lists, tmp_path):
    bad = tmp_path / "lists"
    shutil.copytree(lists, bad)
    (bad / "trainlist01.txt").write_bytes(b"Archery/v_Archery_g08_c01.avi 1\r\n")
    with pytest.raises(SplitListError, match=r"trainlist01.txt:1: label 1 but classInd.txt gives Archery label 3"):
        read_split(bad, 1, "train")


@pytest.mark.parametrize("subset, extra, message", [
    ("test", b"ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\r\n",
     r"testlist01.txt:3784: .* listed twice \(first at line 1\)"),
    ("test", b"ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi\r\n",
     r"testlist01.txt:3784: .* also in the train list .*trainlist01.txt:1\)"),
    ("test", b"../ApplyEyeMakeup/v_ApplyEyeMakeup_g31_c01.avi\r\n",
     r"testlist01.txt:3784: .* outside the videos folder"),
    ("train", b"/etc/v_ApplyEyeMakeup_g31_c01.avi 1\r\n",
     r"trainlist01.txt:9538: .* outside the videos folder"),
])
def test_duplicate_leaking_or_escaping_entries_name_file_and_line(lists, tmp_path, subset, extra, message):
    bad = tmp_path / "lists"
    shutil.copytree(lists, bad)
    with open(bad / f"{subset}list01.txt", "ab") as f:
        f.write(extra)
    with pytest.raises(SplitListError, match=message):
        read_split(bad, 1, subset, allow_missing=True)
