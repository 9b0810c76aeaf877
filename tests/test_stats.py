"""Statistics against values computed by hand (closed forms in the comments) on fixed data."""
from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from scipy import stats as scipy_stats

from analysis import stats
from core.results import write_rows
from tests.result_files import accuracy_frame, accuracy_rows

# video accuracy of runs 1..4 at steps 0, 1, 2 (spatial stream)
VALUES = {0: [60, 62, 64, 66], 1: [61, 65, 62, 70], 2: [59, 60, 61, 61]}
GROUPS = stats.ACCURACY_GROUPS




def t_two_sided_p_df3(t: float) -> float:
    """Student t with 3 dof: P(|T| > t) = 1 − (2/π)(u/(1+u²) + atan u), u = t/√3."""
    u = abs(t) / math.sqrt(3)
    return 1 - 2 / math.pi * (u / (1 + u * u) + math.atan(u))


def t_two_sided_p_df6(t: float) -> float:
    """Even dof (A&S 26.7.3): P(|T| < t) = sinθ(1 + cos²θ/2 + 3cos⁴θ/8), θ = atan(t/√6)."""
    theta = math.atan(abs(t) / math.sqrt(6))
    c2 = math.cos(theta) ** 2
    return 1 - math.sin(theta) * (1 + c2 / 2 + 3 * c2 * c2 / 8)


def test_summary_known_answers():
    table = stats.summary(accuracy_frame(VALUES), GROUPS, "video_accuracy").sort("step")
    assert table["n"].to_list() == [4, 4, 4]
    assert table["mean"].to_list() == [63.0, 64.5, 60.25]
    assert table["prune_ratio"].to_list() == pytest.approx([0.0, 0.04, 0.08])
    # step 0: squared deviations 9+1+1+9 = 20 → sd √(20/3); t(0.975, 3) = 3.182446305
    sd0 = math.sqrt(20 / 3)
    assert table["std"].to_list() == pytest.approx([sd0, math.sqrt(49 / 3), math.sqrt(2.75 / 3)])
    half = 3.182446305284263 * sd0 / 2
    assert (table["ci_low"][0], table["ci_high"][0]) == pytest.approx((63 - half, 63 + half))


def test_effects_known_answers():
    table = stats.effects(accuracy_frame(VALUES), GROUPS, "video_accuracy").sort("step")
    step1, step2 = table.row(0, named=True), table.row(1, named=True)
    # step 1 − step 0 = [1, 3, −2, 4]: mean 1.5, squared deviations sum 21 → sd √7
    assert step1["n"] == 4 and step1["mean_diff"] == 1.5
    assert step1["sd_diff"] == pytest.approx(math.sqrt(7))
    assert step1["cohens_d"] == pytest.approx(1.5 / math.sqrt(7))
    t1 = 1.5 / (math.sqrt(7) / 2)
    assert step1["t"] == pytest.approx(t1) and step1["p_t"] == pytest.approx(t_two_sided_p_df3(t1))
    # ranks of |d| are 1..4; negative ranks sum to 2; exact: 3 of 16 sign patterns give ≤ 2
    assert step1["W"] == 2 and step1["p_wilcoxon"] == pytest.approx(2 * 3 / 16)
    # step 2 − step 0 = [−1, −2, −3, −5]: all negative → W = 0, p = 2/16; pruning hurt → d < 0
    assert step2["W"] == 0 and step2["p_wilcoxon"] == pytest.approx(2 / 16)
    assert step2["mean_diff"] == -2.75
    assert step2["cohens_d"] == pytest.approx(-2.75 / math.sqrt(8.75 / 3))


def test_anova_known_answers_and_scipy_agrees():
    table = stats.anova(accuracy_frame(VALUES), GROUPS, "video_accuracy")
    factor, resid = table.row(0, named=True), table.row(1, named=True)
    assert (factor["source"], resid["source"]) == ("step", "residual")
    grand = 751 / 12
    ss_factor = 4 * ((63 - grand) ** 2 + (64.5 - grand) ** 2 + (60.25 - grand) ** 2)
    ss_resid = 20 + 49 + 2.75
    assert factor["SS"] == pytest.approx(ss_factor) and resid["SS"] == pytest.approx(ss_resid)
    assert (factor["DF"], resid["DF"], factor["n"]) == (2, 9, 12)
    assert factor["MS"] == pytest.approx(ss_factor / 2) and resid["MS"] == pytest.approx(ss_resid / 9)
    f = (ss_factor / 2) / (ss_resid / 9)
    assert factor["F"] == pytest.approx(f)
    assert factor["p"] == pytest.approx((1 + 2 * f / 9) ** -4.5)  # F(2, ν) tail: (1 + 2F/ν)^(−ν/2)
    assert factor["partial_eta_sq"] == pytest.approx(ss_factor / (ss_factor + ss_resid))
    reference = scipy_stats.f_oneway(*VALUES.values())
    assert (factor["F"], factor["p"]) == pytest.approx((reference.statistic, reference.pvalue))


def test_posthoc_known_answers():
    table = stats.posthoc(accuracy_frame(VALUES), GROUPS, "video_accuracy")
    assert table.select("A", "B").rows() == [(0, 1), (0, 2), (1, 2)]
    row = table.row(0, named=True)
    pooled_var = (20 + 49) / 6
    t = 1.5 / math.sqrt(pooled_var * (1 / 4 + 1 / 4))
    assert (row["n_A"], row["n_B"], row["dof"]) == (4, 4, 6)
    assert row["T"] == pytest.approx(t)
    assert row["p_unc"] == pytest.approx(t_two_sided_p_df6(t))
    assert row["p_bonf"] == pytest.approx(min(1.0, 3 * t_two_sided_p_df6(t)))
    assert row["hedges_g"] == pytest.approx(1.5 / math.sqrt(pooled_var) * (1 - 3 / (4 * 8 - 9)))
    assert table["p_bonf"].max() <= 1.0  # capped


def test_missing_runs_are_counted_and_too_few_give_descriptives_only():
    values = {0: [70, 72, 75], 1: [None, 71, 73], 2: [69, None, None]}
    df = pl.concat([accuracy_frame(VALUES), accuracy_frame(values, stream="temporal")])
    with pytest.warns(UserWarning, match="stream=temporal.*step 2: 1 paired run"):
        table = stats.effects(df, GROUPS, "video_accuracy")
    temporal = table.filter(pl.col("stream") == "temporal").sort("step")
    assert temporal["n"].to_list() == [2, 1]
    assert temporal["mean_diff"].to_list() == [-1.5, -1.0]  # runs 2, 3: (71−72, 73−75); run 1: 69−70
    assert temporal.row(1, named=True)["cohens_d"] is None and temporal.row(1, named=True)["p_t"] is None
    assert temporal.row(0, named=True)["cohens_d"] == pytest.approx(-1.5 / math.sqrt(0.5))
    summary = stats.summary(df, GROUPS, "video_accuracy").filter(pl.col("stream") == "temporal")
    assert summary["n"].to_list() == [3, 2, 1] and summary["std"][2] is None
    # flagged beside n: fewer runs than the table's other cells (spatial has 4 at every step)
    assert summary["fewer_runs"].to_list() == [True, True, True]
    spatial = stats.summary(df, GROUPS, "video_accuracy").filter(pl.col("stream") == "spatial")
    assert not spatial["fewer_runs"].any()
    posthoc = stats.posthoc(df, GROUPS, "video_accuracy").filter(pl.col("stream") == "temporal")
    assert posthoc.filter(pl.col("B") == 2)["T"].null_count() == 2  # step 2 has one run
    # the spatial group is untouched by the temporal stream's gaps
    assert table.filter(pl.col("stream") == "spatial")["n"].to_list() == [4, 4]


def test_fusion_methods_are_separate_groups():
    df = pl.concat([accuracy_frame(VALUES), accuracy_frame({0: [80, 81], 1: [79, 83]}, stream="fusion", fusion="mean")])
    summary = stats.summary(df, GROUPS, "video_accuracy")
    assert summary.filter(pl.col("fusion") == "mean")["mean"].to_list() == [80.5, 81.0]
    assert summary.filter(pl.col("fusion").is_null()).height == 3


def irof_rows(per_clip: dict[tuple[int, int], list[float]]) -> list[dict]:
    return [dict(experiment="exp", stream="spatial", run=run, step=step, prune_ratio=0.04 * step,
                 video=f"v{i}", clip=0, label=0, target=0, predicted=0, method="vanilla_gradient",
                 irof=score, n_segments=30, seconds=0.1)
            for (run, step), scores in per_clip.items() for i, score in enumerate(scores)]


def test_cli_writes_parquet_and_csv_matching_the_computation(tmp_path, capsys):
    results = tmp_path / "results"
    write_rows(results, "accuracy", accuracy_rows(VALUES), partition="spatial")
    clips = {(run, step): [0.1 * run + 0.01 * step * run + 0.001 * i for i in range(3)]
             for run in (1, 2, 3) for step in (0, 1)}
    write_rows(results, "irof", irof_rows(clips), partition="spatial")
    stats.main(["--results", str(results), "--out", str(tmp_path / "stats")])
    for prefix in ("video_accuracy", "irof"):
        for name in stats.TABLES:
            parquet = pl.read_parquet(tmp_path / "stats" / f"{prefix}_{name}.parquet")
            csv = pl.read_csv(tmp_path / "stats" / f"{prefix}_{name}.csv", schema=parquet.schema)
            assert parquet.height > 0 and csv.equals(parquet)
    effects = pl.read_parquet(tmp_path / "stats" / "video_accuracy_effects.parquet")
    assert effects.equals(stats.effects(accuracy_frame(VALUES), GROUPS, "video_accuracy"))
    # IROF: the per-run mean over clips is what is compared; run r gains 0.01·r at step 1
    irof_summary = pl.read_parquet(tmp_path / "stats" / "irof_summary.parquet")
    assert irof_summary["mean"].to_list() == pytest.approx([0.201, 0.221])
    irof_effects = pl.read_parquet(tmp_path / "stats" / "irof_effects.parquet")
    assert irof_effects["mean_diff"].to_list() == pytest.approx([0.02])
    assert irof_effects["cohens_d"].to_list() == pytest.approx([0.02 / 0.01])
    assert irof_effects["n"].to_list() == [3]


def test_cli_with_empty_results_and_bad_arguments(tmp_path, capsys):
    (tmp_path / "results").mkdir()
    stats.main(["--results", str(tmp_path / "results"), "--out", str(tmp_path / "stats")])
    assert "nothing to compute" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        stats.main(["--results", str(tmp_path / "nowhere"), "--out", str(tmp_path / "stats")])
    with pytest.raises(ValueError, match="metric"):
        stats.compute_tables(tmp_path / "results", "speed")


def test_constant_differences_keep_wilcoxon_and_skip_d():
    table = stats.effects(accuracy_frame({0: [60, 61, 62], 1: [62, 63, 64]}), GROUPS, "video_accuracy")
    row = table.row(0, named=True)
    assert row["cohens_d"] is None and row["t"] is None
    assert row["W"] == 0 and row["p_wilcoxon"] == pytest.approx(2 / 8)
    assert np.isclose(row["mean_diff"], 2.0)


# --- paired analysis: repeated-measures ANOVA and paired post-hoc -------------------------------

# five runs over four steps, unequal step variances so that the GG epsilon is below 1
RM_VALUES = {0: [60, 62, 64, 66, 63], 1: [61, 65, 62, 70, 60], 2: [59, 60, 61, 61, 58],
             3: [50, 58, 49, 63, 55]}


def test_anova_rm_equals_statsmodels():
    from statsmodels.stats.anova import AnovaRM

    df = accuracy_frame(RM_VALUES)
    table = stats.anova_rm(df, GROUPS, "video_accuracy")
    assert table.height == 1
    ref = AnovaRM(df.select("run", "step", "video_accuracy").to_pandas(), "video_accuracy", "run",
                  within=["step"]).fit().anova_table.loc["step"]
    row = table.row(0, named=True)
    assert (row["df_num"], row["df_den"], row["n"]) == (3, 12, 5)
    assert row["F"] == pytest.approx(ref["F Value"])
    assert row["p"] == pytest.approx(ref["Pr > F"])
    # GG epsilon: double-centred covariance S, (tr S)² / ((k−1) tr S²), within [1/(k−1), 1]
    assert 1 / 3 <= row["epsilon_gg"] < 1
    eps = row["epsilon_gg"]
    assert row["p_gg"] == pytest.approx(scipy_stats.f.sf(ref["F Value"], 3 * eps, 12 * eps))
    assert row["p_gg"] > row["p"]


def test_greenhouse_geisser_known_answers():
    # sphericity exactly (independent equal-variance columns in expectation is not exact; use a
    # compound-symmetric covariance built by hand): epsilon 1
    m = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    # cov of these 3 columns is compound symmetric (equal variances, equal covariances) → ε = 1
    assert stats.greenhouse_geisser(m) == pytest.approx(1.0)
    # all variation in one contrast: lower bound 1/(k−1)
    line = np.array([[0.0, 1.0, 2.0], [0.0, -1.0, -2.0], [0.0, 3.0, 6.0]])
    assert stats.greenhouse_geisser(line) == pytest.approx(1 / 2)


def test_anova_rm_uses_complete_runs_only():
    values = {step: list(v) for step, v in RM_VALUES.items()}
    values[2][4] = None  # run 5 misses step 2: dropped from the repeated-measures ANOVA
    row = stats.anova_rm(accuracy_frame(values), GROUPS, "video_accuracy").row(0, named=True)
    assert (row["n"], row["df_den"]) == (4, 9)


def test_holm_known_case():
    # p sorted 0.01, 0.02, 0.04 → ×3, ×2, ×1 = 0.03, 0.04, 0.04 (monotone); None left out
    assert stats.holm([0.04, None, 0.01, 0.02]) == pytest.approx([0.04, None, 0.03, 0.04])
    # step-down keeps the running maximum: 0.01×3 = 0.03, 0.04×2 = 0.08, 0.045×1 → 0.08
    assert stats.holm([0.01, 0.04, 0.045]) == pytest.approx([0.03, 0.08, 0.08])


def test_posthoc_paired_against_scipy_and_holm():
    table = stats.posthoc_paired(accuracy_frame(RM_VALUES), GROUPS, "video_accuracy").sort("step")
    assert table["step"].to_list() == [1, 2, 3]
    assert table["n"].to_list() == [5, 5, 5]
    base = np.array(RM_VALUES[0], dtype=float)
    p_t = []
    for row in table.iter_rows(named=True):
        x = np.array(RM_VALUES[row["step"]], dtype=float)
        t = scipy_stats.ttest_rel(x, base)
        assert (row["t"], row["p_t"]) == pytest.approx((t.statistic, t.pvalue))
        assert row["mean_diff"] == pytest.approx(np.mean(x - base))
        p_t.append(t.pvalue)
    # Holm by hand over the three steps
    order = np.argsort(p_t)
    expected, running = [0.0] * 3, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, p_t[i] * (3 - rank)))
        expected[i] = running
    assert table["p_holm"].to_list() == pytest.approx(expected)
    # step 3: all five differences negative and distinct → exact W = 0, p = 2/32
    step3 = table.row(2, named=True)
    assert (step3["W"], step3["p_wilcoxon"]) == pytest.approx((0.0, 0.0625))


def test_paired_tables_in_compute_tables(tmp_path):
    write_rows(tmp_path, "accuracy", accuracy_rows(RM_VALUES), partition="spatial")
    tables = stats.compute_tables(tmp_path)
    assert {"video_accuracy_anova_rm", "video_accuracy_posthoc_paired",
            "video_accuracy_anova", "video_accuracy_posthoc"} <= set(tables)
