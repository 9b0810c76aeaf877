"""Issue 27's control chains: random channel choice under slimming's rules, fine-tuning without removal."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from core.results import read_table
from pruning.groups import channel_groups, count_prunable_channels
from pruning.schedule import ChainLoaders, first_unfinished_step, run_chain
from pruning.schedule import tested_steps as steps_tested  # (a name pytest would collect)
from pruning.slimming import bn_l1_subgradient, random_scores, select_channels
from training.checkpoint import load_checkpoint
from training.evaluate import expected_calibration_error
from training.loop import train
from training.models import build_stream

from batches import CLASSES, colour_batches, colour_experiment

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors, one intra-op thread


def kept_widths(plan):
    return [len(keep) for _, keep in plan]


def test_random_scores_follow_the_same_ratio_min_width_and_rounding():
    torch.manual_seed(0)
    model = build_stream("spatial", "resnet18", 3)
    for bn in model.modules():  # a spread of |γ| so slimming's choice is not random by accident
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.weight.data = torch.rand(bn.num_features) + 0.01
    slim = select_channels(model, 0.4, min_channels=16, round_to=8)
    rand = select_channels(model, 0.4, min_channels=16, round_to=8, scores=random_scores(7))
    again = select_channels(model, 0.4, min_channels=16, round_to=8, scores=random_scores(7))
    other = select_channels(model, 0.4, min_channels=16, round_to=8, scores=random_scores(8))
    total = count_prunable_channels(model)
    assert sum(kept_widths(rand)) == pytest.approx(sum(kept_widths(slim)), abs=8)  # same count, to a block
    assert abs(total - sum(kept_widths(rand)) - round(0.4 * total)) <= 4
    assert all(w % 8 == 0 and w >= 16 for w in kept_widths(rand))
    assert [k.tolist() for _, k in rand] == [k.tolist() for _, k in again]  # seeded
    assert [k.tolist() for _, k in rand] != [k.tolist() for _, k in other]
    assert [k.tolist() for _, k in rand] != [k.tolist() for _, k in slim]   # not |γ|'s choice


def test_controls_fine_tune_every_step_but_are_tested_only_where_explained_and_last(tmp_path):
    train_batches, test_batches = colour_batches(2, seed=0), colour_batches(1, seed=1)
    loaders = ChainLoaders(train_batches, None, test_batches)
    cfg = colour_experiment(tmp_path, prune={"steps": 3, "step_fraction": 0.2, "round_to": 8, "residual": False,
                                             "chains": ["slimming", "finetune_only", "random"]},
                            explain={"steps": [0, 1]}, eval={"speed_repeats": 0})
    assert steps_tested(cfg, "slimming") == [1, 2, 3] and steps_tested(cfg, "random") == [1, 3]
    rows = {chain: run_chain(cfg, "spatial", 1, loaders, chain=chain)
            for chain in ("slimming", "finetune_only", "random")}
    assert [r["step"] for r in rows["slimming"]] == [1, 2, 3]
    assert [r["step"] for r in rows["random"]] == [1, 3] == [r["step"] for r in rows["finetune_only"]]
    for chain in ("finetune_only", "random"):  # a checkpoint every step: resume needs them
        assert first_unfinished_step(cfg, "spatial", 1, chain) == 4
        assert cfg.paths.checkpoint("spatial", 1, 2, chain).is_file()
        assert not cfg.paths.scores("spatial", 1, 2, "test", chain).is_file()
    table = read_table(cfg.paths.results, "accuracy")
    assert sorted(table.select("chain", "step").rows()) == [
        ("finetune_only", 1), ("finetune_only", 3), ("random", 1), ("random", 3),
        ("slimming", 1), ("slimming", 2), ("slimming", 3)]
    by = {(r["chain"], r["step"]): r for r in table.to_dicts()}
    # random removes what slimming removes (same schedule and rules), finetune_only nothing
    for step in (1, 3):
        assert by[("random", step)]["channels_removed"] == pytest.approx(by[("slimming", step)]["channels_removed"],
                                                                         abs=0.01)
        assert by[("finetune_only", step)]["channels_removed"] == 0.0
        assert by[("random", step)]["prune_ratio"] == by[("slimming", step)]["prune_ratio"]
        assert by[("random", step)]["threshold"] is None and by[("slimming", step)]["threshold"] > 0
        assert 0 <= by[("random", step)]["ece"] <= 1
    assert set(read_table(cfg.paths.results, "gammas").filter(pl_step_gt0())["chain"]) == \
        {"slimming", "finetune_only", "random"}
    assert read_table(cfg.paths.results, "epochs").group_by("chain").len().sort("chain")["len"].to_list() == [3, 3, 3]

    # finetune_only = the unpruned model fine-tuned exactly as each step is (lr, epochs, λ, seeds)
    model = load_checkpoint(cfg.paths.checkpoint("spatial", 1, 0), classes=CLASSES).model
    finetune = dataclasses.replace(cfg.train, epochs=1, lr=cfg.prune.lr, early_stopping_patience=0)
    for step in (1, 2, 3):
        model = train(model, train_batches, None, finetune, seed=cfg.run_seed(1) + step,
                      loader_epoch_offset=step - 1,
                      after_backward=lambda m: bn_l1_subgradient(m, cfg.prune.sparsity, residual=False)).model
    control = load_checkpoint(cfg.paths.checkpoint("spatial", 1, 3, "finetune_only"), classes=CLASSES).model
    assert [c.width for c in channel_groups(control)] == [c.width for c in channel_groups(model)]
    for (name, a), b in zip(control.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name


def pl_step_gt0():
    import polars as pl
    return pl.col("step") > 0


def test_expected_calibration_error_known_answers():
    labels = np.array([0, 1, 0, 1])
    # confident and right: 0; confident (0.9) and right half the time: |0.5 - 0.9| = 0.4
    assert expected_calibration_error(np.eye(2)[labels], labels) == 0.0
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.1, 0.9]])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.4)
    # two bins: 0.6-confident, all right (gap 0.4) and 0.95-confident, all wrong (gap 0.95)
    probs = np.array([[0.6, 0.4], [0.4, 0.6], [0.05, 0.95], [0.95, 0.05]])
    assert expected_calibration_error(probs, labels) == pytest.approx((2 * 0.4 + 2 * 0.95) / 4)
