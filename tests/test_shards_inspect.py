"""shards.inspect: counts and a contact sheet on good shards, exit 1 on a corrupt sample."""
import shutil

import numpy as np
from PIL import Image

from shards.inspect import flow_to_rgb, main
from shards.tarfiles import read_index


def test_counts_and_contact_sheet(synthetic_shards, tmp_path, capsys):
    sheet = tmp_path / "sheet.png"
    assert main([str(synthetic_shards), "--out", str(sheet)]) == 0
    text = capsys.readouterr().out
    assert "train: 160 samples in 8 shards" in text and "test: 80 samples in 8 shards" in text
    assert "  RedLeft: 20" in text and "decoded and checked 240 samples; 0 problems" in text
    image = np.asarray(Image.open(sheet))
    assert image.shape[0] == 8 * (16 + 96) and image.shape[2] == 3  # one row per class
    assert main([str(synthetic_shards), "--sample", "7", "--out", str(sheet)]) == 0
    assert "decoded and checked 7 samples" in capsys.readouterr().out


def test_corrupt_sample_exits_nonzero_naming_it(synthetic_shards, tmp_path, capsys):
    split = tmp_path / "split1"
    shutil.copytree(synthetic_shards, split)
    tar = split / "test" / "shard-000003.tar"
    offset, size = read_index(tar)[1]["flow.jpg"]
    data = bytearray(tar.read_bytes())
    data[offset:offset + size] = b"\0" * size  # the second sample's flow JPEG is destroyed
    tar.write_bytes(bytes(data))
    assert main([str(split), "--out", str(tmp_path / "sheet.png")]) == 1
    text = capsys.readouterr().out
    assert "1 problems" in text and "shard-000003.tar: sample 'v_" in text and "__001" in text


def test_colour_wheel_directions():
    one = np.ones((1, 1), np.float32)
    right, down = flow_to_rgb(one, 0 * one, 1.0)[0, 0], flow_to_rgb(0 * one, one, 1.0)[0, 0]
    assert right.tolist() == [255, 0, 0] and right.tolist() != down.tolist()
    assert flow_to_rgb(0 * one, 0 * one, 1.0).max() == 0  # no motion is black
