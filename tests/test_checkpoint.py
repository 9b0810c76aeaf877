"""Checkpoints: round trip of a narrowed model in a fresh process, optimizer state, refusals."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from training.checkpoint import CHECKPOINT_VERSION, CheckpointError, load_checkpoint, save_checkpoint
from tests.tiny_models import narrowed_resnet18
from tests.layout import REPO

CLASSES = ["a", "b", "c", "d", "e"]


@pytest.fixture()
def saved(tmp_path):
    model = narrowed_resnet18(len(CLASSES))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    model(torch.randn(4, 3, 64, 64)).sum().backward()
    optimizer.step()
    path = save_checkpoint(tmp_path / "ck" / "step0.pt", model, epoch=3, config={"train": {"lr": 0.1}},
                           classes=CLASSES, optimizer=optimizer, extra={"note": "x"})
    return path, model.eval(), optimizer


def test_round_trip_in_a_fresh_process(saved, tmp_path):
    path, model, _ = saved
    assert [p.name for p in path.parent.iterdir()] == ["step0.pt"]  # no temporary left over
    x = torch.randn(3, 3, 64, 64)
    torch.save(x, tmp_path / "x.pt")
    script = (
        "import sys, torch; from training.checkpoint import load_checkpoint\n"
        f"ck = load_checkpoint({str(path)!r}, classes={CLASSES!r})\n"
        f"x = torch.load({str(tmp_path / 'x.pt')!r})\n"
        "with torch.no_grad(): y = ck.model.eval()(x)\n"
        f"torch.save({{'y': y, 'epoch': ck.epoch}}, {str(tmp_path / 'y.pt')!r})\n")
    subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True)
    out = torch.load(tmp_path / "y.pt")
    with torch.no_grad():
        assert torch.equal(out["y"], model(x))
    assert out["epoch"] == 3


def test_optimizer_state_and_metadata_survive(saved):
    path, model, optimizer = saved
    ck = load_checkpoint(path)
    assert ck.classes == CLASSES and ck.config == {"train": {"lr": 0.1}} and ck.extra == {"note": "x"}
    assert ck.model.layer1[0].conv1.out_channels == 40
    restored = torch.optim.SGD(ck.model.parameters(), lr=1e-3, momentum=0.9)
    restored.load_state_dict(ck.optimizer_state)
    buf = restored.state_dict()["state"][0]["momentum_buffer"]
    assert torch.equal(buf, optimizer.state_dict()["state"][0]["momentum_buffer"])


def test_refuses_another_class_list(saved):
    path, _, _ = saved
    with pytest.raises(CheckpointError, match=r"step0\.pt.*\(1, 'x', 'b'\)"):
        load_checkpoint(path, classes=["a", "x", "c", "d", "e"])
    with pytest.raises(CheckpointError, match="expected 4"):
        load_checkpoint(path, classes=CLASSES[:4])


def test_refuses_another_architecture_naming_both(saved):
    path, _, _ = saved
    with pytest.raises(CheckpointError, match=r"step0\.pt: checkpoint architecture 'resnet18', the config asks for 'resnet50'"):
        load_checkpoint(path, arch="resnet50")
    assert load_checkpoint(path, arch="resnet18").classes == CLASSES


def test_refuses_another_format_version(saved, tmp_path):
    path, _, _ = saved
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = CHECKPOINT_VERSION + 1
    other = tmp_path / "future.pt"
    torch.save(payload, other)
    with pytest.raises(CheckpointError, match=rf"future\.pt: checkpoint format version {CHECKPOINT_VERSION + 1}"):
        load_checkpoint(other)


class Arbitrary:
    pass


def test_refuses_files_that_are_not_checkpoints(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt: not a readable checkpoint"):
        load_checkpoint(garbage)
    pickled = tmp_path / "pickled.pt"
    torch.save({"format_version": CHECKPOINT_VERSION, "obj": Arbitrary()}, pickled)
    with pytest.raises(CheckpointError, match="pickled.pt: not a readable checkpoint"):
        load_checkpoint(pickled)  # weights_only=True refuses arbitrary objects
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
