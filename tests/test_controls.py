"""The study's chain against its controls at the same step, runs paired (analysis.controls):
checked against scipy's paired t-test, a t-interval computed by hand and statsmodels' Holm."""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import polars as pl
import pytest
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests

from analysis import stats
from analysis.controls import versus_controls
from core.results import write_rows

GROUPS = ("experiment", "stream", "fusion", "chain", "split")
RNG = np.random.default_rng(7)
STUDY = {step: RNG.normal(60 - step, 2, 5) for step in (0, 6, 7)}
FINETUNE = {step: RNG.normal(59 - step, 2, 5) for step in (6, 7)}


def rows(chain: str, values: dict[int, np.ndarray], runs=range(1, 6)) -> list[dict]:
    return [dict(experiment="e", stream="spatial", fusion=None, chain=chain, split=1, run=run, step=step,
                 prune_ratio=0.04 * step, video_accuracy=float(v))
            for step, vs in values.items() for run, v in zip(runs, vs)]


def table(*parts: list[dict]) -> pl.DataFrame:
    return pl.DataFrame([r for part in parts for r in part], schema_overrides={"fusion": pl.String})


def test_each_shared_step_equals_scipys_paired_t_and_holm_over_the_steps():
    # random lacks run 5 at step 6: its pairs there are runs 1-4
    random_rows = [r for r in rows("random", {6: STUDY[6] - 1.5 + RNG.normal(0, 1, 5)}) if (r["run"], r["step"]) != (5, 6)]
    out = versus_controls(table(rows("slimming", STUDY), rows("finetune_only", FINETUNE), random_rows),
                          GROUPS, "video_accuracy")
    assert out.select("control", "step").rows() == [("finetune_only", 6), ("finetune_only", 7), ("random", 6)]
    finetune = out.filter(pl.col("control") == "finetune_only")
    for row in finetune.iter_rows(named=True):
        diff = STUDY[row["step"]] - FINETUNE[row["step"]]
        ref = scipy_stats.ttest_rel(STUDY[row["step"]], FINETUNE[row["step"]])
        half = scipy_stats.t.ppf(0.975, 4) * diff.std(ddof=1) / np.sqrt(5)
        assert row["n"] == 5 and row["flag"] == ""
        assert row["diff_vs_control"] == pytest.approx(diff.mean())
        assert row["study_mean"] == pytest.approx(STUDY[row["step"]].mean())
        assert row["t"] == pytest.approx(ref.statistic) and row["p_t"] == pytest.approx(ref.pvalue)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((diff.mean() - half, diff.mean() + half))
    holm = multipletests(finetune["p_t"].to_list(), method="holm")[1]
    assert finetune["p_holm"].to_list() == pytest.approx(list(holm))
    random = out.filter(pl.col("control") == "random").row(0, named=True)
    random_x = np.array([r["video_accuracy"] for r in random_rows])
    assert random["n"] == 4 and random["p_t"] == pytest.approx(scipy_stats.ttest_rel(STUDY[6][:4], random_x).pvalue)
    assert random["p_holm"] == pytest.approx(random["p_t"])  # one step: nothing to adjust


def test_equal_differences_are_flagged_not_tested_and_no_control_no_table(tmp_path):
    same = versus_controls(table(rows("slimming", STUDY), rows("finetune_only", {6: STUDY[6] - 3})),
                           GROUPS, "video_accuracy").row(0, named=True)
    assert same["diff_vs_control"] == pytest.approx(3.0) and same["flag"] == "zero spread"
    assert same["p_t"] is None and same["ci_low"] is None and same["p_holm"] is None
    assert versus_controls(table(rows("slimming", STUDY)), GROUPS, "video_accuracy").is_empty()
    # the statistics tables carry it only where a control ran
    write_rows(tmp_path, "accuracy", [r | _filled(r) for r in rows("slimming", STUDY)], partition="all")
    assert "video_accuracy_vs_control" not in stats.compute_tables(tmp_path)
    write_rows(tmp_path, "accuracy", [r | _filled(r) for r in rows("finetune_only", FINETUNE)], partition="more")
    assert stats.compute_tables(tmp_path)["video_accuracy_vs_control"].height == 2


def _filled(row: dict) -> dict:
    return dict(seed=row["run"], channels_removed=0.05 * row["step"], params_removed=0.0, flops_removed=0.0,
                clip_accuracy=row["video_accuracy"], video_top5=95.0, loss=1.0, n_videos=20,
                finished_at=datetime(2026, 1, 1, tzinfo=timezone.utc))
