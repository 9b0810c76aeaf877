"""The iterative pruning schedule: grid ratios, rows and checkpoints per step, resume at step k."""
from __future__ import annotations

import pytest
import torch

from core.results import read_table
from pruning.accounting import count_params
from pruning.groups import count_prunable_channels
from pruning.schedule import ChainLoaders, first_unfinished_step, run_chain, step_ratio
from training.checkpoint import load_checkpoint

from batches import CLASSES, colour_batches, colour_experiment

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors, one intra-op thread

class CrashOnEvaluation:
    """A test loader that fails on its ``n``-th pass, as if the trial were killed there."""

    def __init__(self, batches, n):
        self.batches, self.n, self.passes = batches, n, 0

    def __iter__(self):
        self.passes += 1
        if self.passes == self.n:
            raise RuntimeError("simulated crash")
        return iter(self.batches)




def test_step_ratios_follow_the_grid():
    assert [round(100 * step_ratio(k, 0.04), 2) for k in (1, 2, 3, 6, 7, 14, 17)] == [
        4.0, 7.84, 11.53, 21.72, 24.86, 43.53, 50.04]


def test_interrupted_chain_resumes_at_step_k_and_matches_an_uninterrupted_one(tmp_path):
    train, test = colour_batches(3, seed=0), colour_batches(2, seed=1)
    full = colour_experiment(tmp_path / "full")
    epochs = []
    rows = run_chain(full, "spatial", 1, ChainLoaders(train, None, test), on_epoch=epochs.append)
    assert [r["step"] for r in rows] == [1, 2]
    # one report per fine-tuning epoch, with what was pruned at its step (as Tune gets it)
    assert [(e["step"], e["epoch"]) for e in epochs] == [(1, 1), (2, 1)]
    for report, row in zip(epochs, rows):
        for key in ("channels_removed", "params_removed", "flops_removed", "threshold"):
            assert report[key] == row[key], key
        assert report["threshold"] > 0 and report["lr"] == full.prune.lr
        assert report["train_samples_per_s"] > 0 and report["train_loss"] > 0

    cut = colour_experiment(tmp_path / "cut")
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_chain(cut, "spatial", 1, ChainLoaders(train, None, CrashOnEvaluation(test, n=2)))
    assert first_unfinished_step(cut, "spatial", 1) == 2
    resumed = run_chain(cut, "spatial", 1, ChainLoaders(train, None, test))
    assert [r["step"] for r in resumed] == [2]
    assert run_chain(cut, "spatial", 1, ChainLoaders(train, None, test)) == []  # finished: nothing redone

    baseline = load_checkpoint(full.paths.checkpoint("spatial", 1, 0)).model
    for step in (1, 2):
        a = load_checkpoint(full.paths.checkpoint("spatial", 1, step), classes=CLASSES)
        b = load_checkpoint(cut.paths.checkpoint("spatial", 1, step), classes=CLASSES)
        for (name, wa), (_, wb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
            torch.testing.assert_close(wa, wb, rtol=0, atol=1e-6, msg=f"step {step} {name}")
        remaining = count_prunable_channels(a.model, residual=True)
        assert remaining == round(0.96 ** step * count_prunable_channels(baseline, residual=True))
        assert count_params(a.model) < count_params(baseline)
        assert a.extra["step"] == step

    table = read_table(cut.paths.results, "accuracy").sort("step")
    assert table["step"].to_list() == [1, 2]
    assert table["prune_ratio"].to_list() == pytest.approx([step_ratio(k, 0.04) for k in (1, 2)])
    assert table["channels_removed"].to_list() == pytest.approx(table["prune_ratio"].to_list(), abs=1e-3)
    assert all(0 < f < 1 for f in table["flops_removed"])
    # each step measures its speed beside params and FLOPs (eval.speed_repeats, eval.throughput_batch)
    assert all(ms > 0 for ms in table["latency_ms"]) and all(c > 0 for c in table["throughput_cps"])
    assert table["device"].to_list() == ["cpu", "cpu"]
    reference = read_table(full.paths.results, "accuracy").sort("step")
    assert table["video_accuracy"].to_list() == reference["video_accuracy"].to_list()
    epochs = read_table(cut.paths.results, "epochs")
    assert sorted(epochs["step"].to_list()) == [1, 2]


def test_a_step_whose_rows_are_damaged_is_not_done_though_its_checkpoint_exists(tmp_path):
    """Done means the results store holds the rows (issue 31): checkpoints are inputs, not proof."""
    from core.damaged import set_aside_damaged
    from core.results import table_path

    train, test = colour_batches(3, seed=0), colour_batches(2, seed=1)
    cfg = colour_experiment(tmp_path / "exp")
    run_chain(cfg, "spatial", 1, ChainLoaders(train, None, test))
    before = read_table(cfg.paths.results, "accuracy").sort("step").select("step", "loss", "video_accuracy",
                                                                          "channels_removed")
    part = table_path(cfg.paths.results, "accuracy", "spatial/run1/step1")
    part.write_bytes(part.read_bytes()[:-200])  # cut short, as a crash on a network filesystem leaves it
    assert first_unfinished_step(cfg, "spatial", 1) == 1  # unreadable rows: not done
    assert [f for f, _, _ in set_aside_damaged(cfg.paths.results)] == [part]
    assert cfg.paths.checkpoint("spatial", 1, 1).is_file() and first_unfinished_step(cfg, "spatial", 1) == 1
    table_path(cfg.paths.results, "gammas", "spatial/run1/step2/finetuned").unlink()  # lost rows, too
    rebuilt = run_chain(cfg, "spatial", 1, ChainLoaders(train, None, test))
    assert [r["step"] for r in rebuilt] == [1, 2]
    after = read_table(cfg.paths.results, "accuracy").sort("step").select(before.columns)
    assert after.equals(before), (after, before)
    assert first_unfinished_step(cfg, "spatial", 1) == 3


def test_a_step_whose_inputs_for_later_stages_are_gone_or_damaged_is_done_again(tmp_path, capsys):
    """A step's score file (the fuse stage's input) removed, a later step's checkpoint cut short:
    the checkpoint is named and set aside, and the chain redoes both steps to the same rows."""
    from core.damaged import set_aside_damaged_inputs

    train, test = colour_batches(3, seed=0), colour_batches(2, seed=1)
    cfg = colour_experiment(tmp_path / "exp")
    run_chain(cfg, "spatial", 1, ChainLoaders(train, None, test))
    columns = ["step", "loss", "video_accuracy", "channels_removed"]
    before = read_table(cfg.paths.results, "accuracy").sort("step").select(columns)
    scores, checkpoint = cfg.paths.scores("spatial", 1, 1, "test"), cfg.paths.checkpoint("spatial", 1, 2)
    scores.unlink()
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    assert first_unfinished_step(cfg, "spatial", 1) == 1  # its rows are there, its scores are not
    assert [f for f, _, _ in set_aside_damaged_inputs(cfg.paths.root)] == [checkpoint]
    assert f"checkpoint: {checkpoint} cannot be read (BadZipFile" in capsys.readouterr().err
    rebuilt = run_chain(cfg, "spatial", 1, ChainLoaders(train, None, test))
    assert [r["step"] for r in rebuilt] == [1, 2] and scores.is_file()
    assert load_checkpoint(checkpoint).epoch >= 0  # whole again
    assert set_aside_damaged_inputs(cfg.paths.root) == [] and first_unfinished_step(cfg, "spatial", 1) == 3
    after = read_table(cfg.paths.results, "accuracy").sort("step").select(columns)
    assert after.equals(before), (after, before)


def test_each_step_records_its_accuracy_before_fine_tuning(tmp_path):
    """With no fine-tuning epoch the accuracy right after removal is the step's accuracy (the
    light loader here is the test loader); without a light loader it is not measured."""
    train, test = colour_batches(3, seed=0), colour_batches(2, seed=1)
    cfg = colour_experiment(tmp_path / "a")
    cfg.prune.finetune_epochs = 0
    rows = run_chain(cfg, "spatial", 1, ChainLoaders(train, None, test, light_test=test))
    assert [r["video_accuracy_before_finetune"] for r in rows] == [r["video_accuracy"] for r in rows]
    table = read_table(cfg.paths.results, "accuracy").sort("step")
    assert table["video_accuracy_before_finetune"].to_list() == table["video_accuracy"].to_list()
    assert table["weights"].to_list() == ["none", "none"]
    unmeasured = run_chain(colour_experiment(tmp_path / "b"), "spatial", 1, ChainLoaders(train, None, test))
    assert [r["video_accuracy_before_finetune"] for r in unmeasured] == [None, None]
