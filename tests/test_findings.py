"""Issue #27 point 3: the findings sentences, per model and chain, from a results store with the
controls' columns (chain, irof_random, same-target saliency change with its run-to-run rows)."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from analysis import findings
from core.results import write_rows
from pipeline.sweep import accuracy_table, closing_summary

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
BASE = [60.0, 62.0, 64.0, 66.0, 63.0]
DIFF = [0.2, -0.3, 0.1, 0.4, -0.1]


def accuracy(chain: str, step: int, values: list[float], fusion=None) -> list[dict]:
    return [dict(experiment="e", stream="fusion" if fusion else "spatial", fusion=fusion, chain=chain, run=run,
                 seed=run, step=step, prune_ratio=0.04 * step, channels_removed=0.05 * step,
                 params_removed=0.07 * step, flops_removed=0.05 * step, split=1, clip_accuracy=v,
                 video_accuracy=v, video_top5=95.0, loss=1.0, n_videos=20, finished_at=T0)
            for run, v in enumerate(values, start=1)]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("findings")
    results = root / "results"
    # step 0 written once (slimming); the study keeps accuracy at step 1, loses 5 points at step 2;
    # the random chain loses 3 points at step 1 already
    rows = (accuracy("slimming", 0, BASE) + accuracy("slimming", 1, [b + d for b, d in zip(BASE, DIFF)])
            + accuracy("slimming", 2, [b - 5 + d for b, d in zip(BASE, DIFF)])
            + accuracy("random", 1, [b - 3 + d for b, d in zip(BASE, DIFF)])
            + accuracy("random", 2, [b - 8 + d for b, d in zip(BASE, DIFF)])
            + accuracy("slimming", 0, [50.0, 51.0], fusion="mean") + accuracy("slimming", 1, [50.0, 52.0], fusion="mean"))
    write_rows(results, "accuracy", rows, partition="all")
    irof = [dict(experiment="e", stream="spatial", chain="slimming", run=run, step=step, prune_ratio=0.04 * step,
                 video="v", clip=0, label=0, target=0, predicted=0, method="saliency",
                 irof=10.0 - step + 0.1 * run, irof_random=6.0, n_segments=20, seconds=0.1)
            for run in range(1, 6) for step in (0, 2)]
    write_rows(results, "irof", irof, partition="all")
    change = [dict(experiment="e", stream="spatial", chain="slimming", run=run, step=step,
                   prune_ratio=0.04 * step, video="v", clip=0, method="saliency", target_rule="predicted",
                   target=0, base_target=0, spearman=0.5, iou_top=0.5, top_fraction=0.1, explain_hash="h",
                   checkpoint_sha256="c", base_checkpoint_sha256="b",
                   base_run=run - 1 if step == 0 else None, spearman_same=0.9 if step == 0 else 0.6 + 0.01 * run,
                   prediction_changed=run <= 2 if step else False)
              for run in range(1, 6) for step in (0, 2) if not (step == 0 and run == 1)]
    write_rows(results, "saliency_change", change, partition="all")
    return root


def test_sentences_per_model_and_chain(store):
    table = findings.for_experiment(store, None)
    assert list(zip(table["model"], table["chain"])) == [("spatial", "slimming"), ("spatial", "random"),
                                                         ("fusion: mean", "slimming")]
    study, control, fusion = table["sentence"].to_list()
    assert study.startswith("spatial, slimming (primary endpoint): accuracy within ±1 point of unpruned up to "
                            "5.0 % of channels removed (TOST p < 0.001; ")
    assert "Δ = +0.0600 points" in study and "not shown within ±1 point at 10.0 % of channels removed" in study
    # the random chain's rows are the study's minus exactly 3 points: against the control, no test
    assert ("slimming − control at step 1 (5.0 % of channels removed), runs paired: random Δ = +3.00 points "
            "(no interval, no test, zero spread)") in study
    assert "− control" not in control  # the controls are not compared with themselves
    assert control.startswith("spatial, random: accuracy not shown within ±1 point at 5.0 % of channels removed, "
                              "the first pruned step") and "Δ = −2.94 points" in control
    # every run's IROF drops by exactly 2: zero spread, no test (said, not hidden)
    assert "IROF ÷ segments (saliency) not testable at 10.0 % of channels removed, the first pruned step (zero spread)" in study
    # IROF − random order: (10.3 − 6) / 20 = 0.215 unpruned (mean over runs), (8.3 − 6) / 20 = 0.115 at step 2
    assert "IROF − random order (÷ segments): +0.215 unpruned, +0.115 at 10.0 % of channels removed" in study
    # same-target ρ 0.61..0.65 (mean 0.63); band from the 4 run-to-run rows; 2 of 5 runs changed
    assert "ρ = 0.63 at 10.0 % of channels removed (same target, mean over 5 runs); two unpruned runs: ρ = 0.90 to 0.90" in study
    assert "prediction changed on 40 % of clips" in study
    assert fusion.endswith("[n < 3: not a finding].")


def test_closing_summary_is_readable(store):
    text = closing_summary(store, {})
    assert text.startswith("findings (fixed-sequence TOST")
    assert "NaN" not in text and "video accuracy (%), mean" in text
    table_lines = text.split("\n\n")[1].splitlines()
    assert "fusion: mean" in text and len({len(line) for line in table_lines}) == 1  # aligned, nothing cut


def test_closing_table_shows_the_channels_measured_removed_not_the_target(store):
    """The store's rows remove 5 % a step against a 4 % target: the table shows what was removed
    (a finetune_only control, whose target is the schedule's, removes none)."""
    table = accuracy_table(store / "results")
    for row in table.iter_rows(named=True):
        assert row["channels_removed_%"] == pytest.approx(5.0 * row["step"]), row
