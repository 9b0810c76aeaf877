"""The report's explanation and statistics parts: robust IROF split by correctness, the saliency
change figure, the IROF baseline named, the paired analysis before the original study's, and
the statistics' limits stated where they bite."""
from __future__ import annotations

import re

import numpy as np
import polars as pl
import pytest

from analysis import figures, readable
from analysis.report import build_report, wilcoxon_floor
from core.results import write_rows
from tests.report_experiments import paper_size_experiment

RUNS, STEPS = range(1, 6), (0, 1, 2)
OUTLIER = -341_563.0  # the demo's exploded score of a misclassified clip under the true label


def irof_rows(stream, run, step, rng):
    """Four clips: three correct (scores near 60), one misclassified, exploding in run 1 step 2."""
    rows = []
    for clip in range(4):
        correct = clip < 3
        score = OUTLIER if (not correct and run == 1 and step == 2) else float(rng.normal(60 - 5 * step, 2))
        rows.append(dict(experiment="x", stream=stream, run=run, step=step, prune_ratio=1 - 0.9 ** step,
                         video=f"v_A_g0{clip}_c01", clip=12, label=clip, target=clip,
                         predicted=clip if correct else clip + 1, method="vanilla_gradient_max",
                         irof=score, n_segments=80, seconds=0.5, target_rule="label", correct=correct))
    return rows


def change_rows(stream, run, step, rng):
    return [dict(experiment="x", stream=stream, run=run, step=step, prune_ratio=1 - 0.9 ** step,
                 video=f"v_A_g0{clip}_c01", clip=12, method="vanilla_gradient_max", target_rule="label",
                 target=clip, base_target=clip, spearman=1 - 0.2 * step + 0.01 * rng.normal(),
                 iou_top=1 - 0.3 * step + 0.01 * rng.normal(), top_fraction=0.1, explain_hash="h",
                 checkpoint_sha256="c", base_checkpoint_sha256="b") for clip in range(4)]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = paper_size_experiment(tmp_path_factory.mktemp("explained"), name="x", steps=STEPS, explained=STEPS)  # irof partitions replaced below
    rng = np.random.default_rng(3)
    for stream in ("spatial", "temporal"):
        for run in RUNS:
            write_rows(root / "results", "irof", [r for step in STEPS for r in irof_rows(stream, run, step, rng)],
                       partition=f"{stream}/run{run}")
            write_rows(root / "results", "saliency_change",
                       [r for step in STEPS[1:] for r in change_rows(stream, run, step, rng)],
                       partition=f"{stream}/run{run}")
    return root, build_report(root)


@pytest.mark.slow  # builds a whole report (about 40 s on 2 shared cores)
def test_irof_is_aggregated_robustly_and_split_by_correctness(built):
    root, report = built
    robust = report.tables["irof_robust"]
    spatial = robust.filter(pl.col("stream") == "spatial")
    counts = {(r["clips_of"], r["step"]): (r["runs"], r["clips"]) for r in spatial.iter_rows(named=True)}
    assert counts[("all", 2)] == (5, 20) and counts[("correct", 2)] == (5, 15) and counts[("incorrect", 2)] == (5, 5)
    per_run = report.tables["irof_by_correctness"]
    mine = per_run.filter((pl.col("stream") == "spatial") & (pl.col("run") == 1) & (pl.col("step") == 2))
    raw = pl.DataFrame(irof_rows("spatial", 1, 2, np.random.default_rng(0)))  # only the outlier is fixed
    incorrect = mine.filter(pl.col("clips_of") == "incorrect").row(0, named=True)
    assert incorrect["median"] == incorrect["mean"] == OUTLIER and incorrect["clips"] == 1
    every = mine.filter(pl.col("clips_of") == "all").row(0, named=True)
    assert every["clips"] == 4 and every["mean"] < -80_000 and every["median"] > 40  # the median resists
    assert raw.filter(~pl.col("correct")).height == 1
    # the statistics use the per-run median, so the one clip does not move the trend
    summary = report.tables["irof_summary"].filter((pl.col("stream") == "spatial") & (pl.col("step") == 2))
    assert summary["mean"][0] > 40
    markdown = report.markdown.read_text()
    # the outlier-sensitive mean is a column of the shown table (readable header), beside the robust one
    assert f"| {readable.header('mean_outlier_sensitive')} |" in markdown
    assert "outlier-sensitive" in readable.header("mean_outlier_sensitive")
    assert "mean_outlier_sensitive" in report.tables["irof_robust"].columns


@pytest.mark.slow  # builds a whole report (about 40 s on 2 shared cores)
def test_irof_axis_is_not_stretched_by_one_outlier(built):
    _, report = built
    boxes = report.figures["irof_boxplots"].data
    for model in ("spatial (vanilla_gradient_max)", "temporal (vanilla_gradient_max)"):
        low, high = boxes["limits"][model]
        assert low > -1000 and high < 200  # the outlier is far below, 60-ish scores fill the axis
        assert boxes["outside"][model] == 1
    subsets = set(boxes["boxes"]["clips_of"])
    assert subsets == {"correct", "incorrect"}


@pytest.mark.slow  # builds a whole report (about 40 s on 2 shared cores)
def test_baseline_and_target_are_named(built):
    _, report = built
    for text in (report.markdown.read_text(), report.index.read_text()):
        assert "per_image_mean" in text and "own default (perturb_baseline=" in text
        assert "Target class: label" in text


@pytest.mark.slow  # builds a whole report (about 40 s on 2 shared cores)
def test_saliency_change_figure_against_the_pruned_fraction(built):
    _, report = built
    data = report.figures["saliency_change"].data
    assert data["model"].to_list() == ["spatial (vanilla_gradient_max)"] * 2 + ["temporal (vanilla_gradient_max)"] * 2
    assert data["step"].to_list() == [1, 2, 1, 2] and set(data["runs"]) == {5} and set(data["clips"]) == {20}
    assert data["spearman_mean"].to_list() == pytest.approx([0.8, 0.6, 0.8, 0.6], abs=0.02)
    assert data["iou_top_mean"].to_list() == pytest.approx([0.7, 0.4, 0.7, 0.4], abs=0.02)
    assert data["prune_ratio"].to_list() == pytest.approx([0.1, 0.19, 0.1, 0.19])


@pytest.mark.slow  # builds a whole report (about 40 s on 2 shared cores)
def test_paired_analysis_leads_and_the_original_study_is_labelled(built):
    _, report = built
    markdown = report.markdown.read_text()
    for section, first_original in (("## Accuracy under pruning", "accuracy_cohens_d"),
                                    ("## Faithfulness of the explanations", "Original study's analysis: IROF")):
        body = markdown[markdown.index(section):]
        order = [body.index(s) for s in ("repeated-measures ANOVA over steps", "each step against step 0, runs "
                                         "paired, paired t and exact Wilcoxon", "The original study's analysis follows",
                                         first_original, "one-way between-groups ANOVA", "Bonferroni-corrected")]
        assert order == sorted(order), section
    captions = re.findall(r"^\*?(Original study's analysis: [^\n]*)", markdown, flags=re.M)
    assert len(captions) >= 2 * 4 + 2  # 4 tables per metric, 2 accuracy figures
    # the Wilcoxon floor, beside the Wilcoxon columns
    assert markdown.count("with n = 5 pairs the smallest exact two-sided p is 0.0625, so it can never fall "
                          "below 0.05") >= 3  # paired accuracy, paired IROF, the Wilcoxon figure


def test_robust_limits_and_wilcoxon_floor_known_answers():
    assert figures.robust_limits(np.array([1.0, 2, 3, 4, 5, 1e6]))[1] < 100
    assert figures.robust_limits(np.array([1.0, 2, 3, 4, 5])) == pytest.approx((0.8, 5.2))
    assert wilcoxon_floor(5) == 0.0625 and wilcoxon_floor(6) == 0.03125


def test_intervals_from_fewer_than_three_runs_are_not_drawn(tmp_path):
    summary = pl.DataFrame({"experiment": ["x"] * 3, "stream": ["spatial"] * 3, "method": ["m"] * 3,
                            "step": [0, 1, 2], "prune_ratio": [0.0, 0.1, 0.2], "n": [5, 2, 1],
                            "mean": [1.0, 2.0, 3.0], "std": [0.1, 0.1, None],
                            "ci_low": [0.9, -5.0, None], "ci_high": [1.1, 9.0, None]})
    plotted = figures.trend_with_intervals(summary, "IROF", tmp_path / "t.png")
    assert plotted.data["interval_drawn"].to_list() == [True, False, False]


@pytest.mark.slow  # builds a whole report (about 45 s on 2 shared cores)
def test_intervals_from_fewer_than_three_runs_are_flagged_in_the_report(tmp_path):
    root = paper_size_experiment(tmp_path / "few", name="few", steps=(0, 1), explained=(0, 1))
    for stream in ("spatial", "temporal"):  # runs 3-5 lose their pruned step: n = 2 there
        for run in (3, 4, 5):
            write_rows(root / "results", "accuracy", pl.read_parquet(
                root / "results" / "accuracy" / stream / "None" / f"run{run}.parquet").filter(pl.col("step") == 0)
                .drop("written_at", "host", "node_id"), partition=f"{stream}/None/run{run}")
    report = build_report(root)
    markdown = report.markdown.read_text()
    assert "have fewer than 3 runs" in markdown and "n &lt; 3: not a finding" in markdown
