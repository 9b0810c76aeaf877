"""The training loop on plain iterables of batch dicts: determinism, the after_backward hook,
exact resume from a checkpoint, early stopping with the best weights restored."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from training.checkpoint import load_checkpoint, save_checkpoint
from core.config import TrainConfig
from training.evaluate import evaluate
from training.loop import TrainState, train
from training.models import build_stream

from batches import CLASSES, colour_batches


CFG = TrainConfig(epochs=2, batch_size=6, optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=0.0,
                  scheduler="cosine", device="cpu", channels_last=True, val_fraction=0.0)


def trained(seed, cfg=CFG, **kwargs):
    torch.manual_seed(seed)
    model = build_stream("spatial", "resnet18", len(CLASSES))
    return train(model, colour_batches(), colour_batches(2, seed=1), cfg, seed=seed, **kwargs)


def test_deterministic_on_cpu_for_a_seed():
    a, b, c = trained(0), trained(0), trained(1)
    for (name, wa), wb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(wa, wb), name
    assert not torch.equal(a.model.fc.weight, c.model.fc.weight)
    rows = a.state.history
    assert [(r["epoch"], r["phase"]) for r in rows] == [(1, "train"), (1, "val"), (2, "train"), (2, "val")]
    assert rows[0]["lr"] == CFG.lr and rows[2]["lr"] < CFG.lr  # cosine schedule
    assert rows[-2]["loss"] < rows[0]["loss"]  # it learns


def test_after_backward_runs_between_backward_and_step():
    calls = []

    def zero_grads(model):
        calls.append(1)
        for p in model.parameters():
            p.grad.zero_()

    torch.manual_seed(0)
    model = build_stream("spatial", "resnet18", 3)
    before = {k: v.clone() for k, v in model.named_parameters()}
    train(model, colour_batches(), None, dataclasses.replace(CFG, epochs=1), after_backward=zero_grads)
    assert len(calls) == 3
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name  # zero gradients, no decay: nothing moved


def test_resume_from_checkpoint_matches_an_uninterrupted_run(tmp_path):
    full = trained(0)
    saved = {}

    def checkpoint_after_first_epoch(state, model, optimizer):
        if state.epoch == 1:
            saved["path"] = save_checkpoint(tmp_path / "ck.pt", model, epoch=state.epoch, config={},
                                            classes=CLASSES, optimizer=optimizer,
                                            extra={"train_state": state.to_dict()})
            raise KeyboardInterrupt  # the "crash"

    try:
        trained(0, on_epoch=checkpoint_after_first_epoch)
    except KeyboardInterrupt:
        pass
    ck = load_checkpoint(saved["path"], classes=CLASSES)
    resumed = train(ck.model, colour_batches(), colour_batches(2, seed=1), CFG,
                    state=TrainState.from_dict(ck.extra["train_state"]),
                    optimizer_state=ck.optimizer_state)
    for (name, wa), wb in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(wa, wb), name
    untimed = [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.state.history]
    assert untimed == [{k: v for k, v in r.items() if k != "seconds"} for r in full.state.history]


def test_early_stopping_restores_the_best_weights():
    weights = {}

    def remember(state, model, optimizer):
        weights[state.epoch] = {k: v.clone() for k, v in model.state_dict().items()}

    cfg = dataclasses.replace(CFG, epochs=6, early_stopping_patience=1, scheduler="none", lr=0.1)
    torch.manual_seed(0)
    model = build_stream("spatial", "resnet18", 3)
    # val labels are shifted by one class: the better it learns, the worse the val loss gets
    result = train(model, colour_batches(), colour_batches(2, seed=1, shuffle_labels=True), cfg,
                   seed=0, on_epoch=remember)
    state = result.state
    assert state.stopped_early and state.epoch < 6
    assert state.epoch == state.best_epoch + 1
    val = {r["epoch"]: r["loss"] for r in state.history if r["phase"] == "val"}
    assert val[state.best_epoch] == min(val.values())
    for name, w in result.model.state_dict().items():
        assert torch.equal(w, weights[state.best_epoch][name]), name


@pytest.mark.cuda
def test_bf16_autocast_channels_last_and_compile_on_cuda():
    cfg = dataclasses.replace(CFG, device="cuda", amp=True, channels_last=True, compile=True)
    result = trained(0, cfg)
    model = result.model
    assert next(model.parameters()).is_cuda
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    train_loss = [r["loss"] for r in result.state.history if r["phase"] == "train"]
    assert train_loss[-1] < train_loss[0]
    batches = colour_batches(2, seed=1)
    on_gpu = evaluate(model, batches, 3, device="cuda")
    on_cpu = evaluate(model.cpu().float(), batches, 3, device="cpu", amp=False)
    np.testing.assert_allclose(on_gpu.video_scores, on_cpu.video_scores, atol=0.05)  # bf16 vs fp32


class TinyNet(torch.nn.Module):
    """Conv, BN, pooling and an ``fc``, as the loop expects: small enough to compile quickly."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, len(CLASSES))

    def forward(self, x):
        return self.fc(torch.relu(self.bn1(self.conv1(x))).mean((2, 3)))


def compile_failure() -> str | None:
    """Why torch.compile does not run on this CPU torch (e.g. no C++ compiler), else None."""
    from pipeline.validation import compile_unsupported
    if reason := compile_unsupported():
        return reason
    try:
        torch.compile(lambda x: torch.relu(x) * 2)(torch.ones(3))
    except Exception as exc:  # inductor needs a working C++ toolchain on the CPU
        return f"torch.compile does not work with this CPU torch {torch.__version__}: {type(exc).__name__}: {exc}"[:300]
    return None


@pytest.mark.slow
def test_compile_true_trains_the_same_weights_as_eager_on_cpu():
    """train.compile: the compiled forward trains the model's own parameters, to the same
    weights as eager mode (same seed and batches), up to float reordering by the compiler."""
    if reason := compile_failure():
        pytest.skip(reason)
    cfg = dataclasses.replace(CFG, epochs=1, channels_last=True, momentum=0.0)
    results = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        results[compiled] = train(TinyNet(), colour_batches(2), None, dataclasses.replace(cfg, compile=compiled),
                                  seed=0)
    eager, compiled = (results[k].model.state_dict() for k in (False, True))
    moved = False
    torch.manual_seed(0)
    for name, initial in TinyNet().state_dict().items():
        torch.testing.assert_close(compiled[name], eager[name], rtol=1e-4, atol=1e-5, msg=name)
        moved |= not torch.equal(compiled[name], initial)
    assert moved  # the compiled steps did update the weights
    assert [r["phase"] for r in results[True].state.history] == ["train"]
