"""Issue #27 point 2: statistics that can support "no change" (paired differences with CIs,
TOST equivalence, fixed-sequence "kept up to", minimal detectable effect) and degenerate input
that is flagged instead of reported as a finding. Known answers computed independently here."""
from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from scipy import optimize
from scipy import stats as scipy_stats

from analysis import equivalence, paired, stats
from tests.result_files import accuracy_frame
from core.config import ConfigError, ExperimentConfig
from pipeline.validation import config_problems

GROUPS = stats.ACCURACY_GROUPS

# the demo's bug: accuracies are counts / 6 videos; both runs gain 2 videos at step 1, so the
# differences are equal but for float rounding (sd ~1e-15): d_z was 4.7e15 and p ~ 1e-16
DEMO = {0: [0 / 6 * 100, 1 / 6 * 100], 1: [2 / 6 * 100, 3 / 6 * 100]}


def test_equal_differences_from_float_rounding_give_no_test_and_are_flagged():
    raw = np.array(DEMO[1]) - np.array(DEMO[0])
    assert np.std(raw, ddof=1) > 0  # the trap: not exactly equal
    effects = stats.effects(accuracy_frame(DEMO), GROUPS, "video_accuracy").row(0, named=True)
    assert effects["mean_diff"] == pytest.approx(100 / 3)
    assert effects["cohens_d"] is None and effects["t"] is None and effects["p_t"] is None
    assert effects["flag"] == "n < 3; zero spread"
    post = stats.posthoc_paired(accuracy_frame(DEMO), GROUPS, "video_accuracy").row(0, named=True)
    assert post["p_t"] is None and post["ci_low"] is None and post["mde"] is None
    assert post["flag"] == "n < 3; zero spread"
    eq = stats.equivalence_table(accuracy_frame(DEMO), GROUPS, "video_accuracy", 1.0).row(0, named=True)
    assert eq["p_tost"] is None and eq["equivalent"] is None and eq["flag"] == "n < 3; zero spread"


def test_few_runs_flagged_in_every_paired_table():
    values = {0: [60.0, 62.0], 1: [61.0, 65.0]}
    df = accuracy_frame(values)
    assert stats.summary(df, GROUPS, "video_accuracy")["flag"].to_list() == ["n < 3", "n < 3"]
    for table in (stats.effects(df, GROUPS, "video_accuracy"), stats.posthoc_paired(df, GROUPS, "video_accuracy"),
                  stats.equivalence_table(df, GROUPS, "video_accuracy", 1.0)):
        assert table["flag"].to_list() == ["n < 3"]
    # the tests still run at n = 2 (shown, flagged)
    assert stats.posthoc_paired(df, GROUPS, "video_accuracy")["p_t"][0] is not None


# differences 0.2, -0.3, 0.1, 0.4, -0.1 (mean 0.06) over five runs
BASE = [60.0, 62.0, 64.0, 66.0, 63.0]
DIFF = [0.2, -0.3, 0.1, 0.4, -0.1]


def test_tost_ci_and_mde_known_answers():
    values = {0: BASE, 1: [b + d for b, d in zip(BASE, DIFF)]}
    row = stats.equivalence_table(accuracy_frame(values), GROUPS, "video_accuracy", 1.0).row(0, named=True)
    n, mean, sd = 5, 0.06, float(np.std(DIFF, ddof=1))
    se = sd / math.sqrt(n)
    # TOST: the larger of P(T > (mean + m)/se) and P(T < (mean − m)/se), 4 dof
    p_hand = max(scipy_stats.t.sf((mean + 1) / se, 4), scipy_stats.t.cdf((mean - 1) / se, 4))
    assert row["n"] == n and row["mean_diff"] == pytest.approx(mean)
    assert row["p_tost"] == pytest.approx(p_hand, rel=1e-9) and row["equivalent"] is True
    half = scipy_stats.t.ppf(0.975, 4) * se
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((mean - half, mean + half))
    half90 = scipy_stats.t.ppf(0.95, 4) * se
    assert (row["ci90_low"], row["ci90_high"]) == pytest.approx((mean - half90, mean + half90))
    # MDE: the d_z at which the noncentral t (4 dof, ncp d·√5) exceeds the two-sided 5 % critical value
    # with probability 0.8, solved here by root finding, times sd
    crit = scipy_stats.t.ppf(0.975, 4)

    def power(d):
        ncp = d * math.sqrt(n)
        return scipy_stats.nct.sf(crit, 4, ncp) + scipy_stats.nct.cdf(-crit, 4, ncp) - 0.8
    assert row["mde"] == pytest.approx(optimize.brentq(power, 0.5, 3) * sd, rel=1e-4)
    # a margin inside the 90 % interval: not equivalent
    narrow = stats.equivalence_table(accuracy_frame(values), GROUPS, "video_accuracy", 0.1).row(0, named=True)
    assert narrow["equivalent"] is False and narrow["margin"] == 0.1


def test_fixed_sequence_stops_at_the_first_step_not_shown_equivalent():
    # steps 1, 2 within ±1 point; step 3 drops 5 points; step 4 back within ±1 (never tested)
    values = {0: BASE, 1: [b + d for b, d in zip(BASE, DIFF)], 2: [b - d for b, d in zip(BASE, DIFF)],
              3: [b - 5 + d for b, d in zip(BASE, DIFF)], 4: [b + d / 2 for b, d in zip(BASE, DIFF)]}
    table = stats.equivalence_table(accuracy_frame(values), GROUPS, "video_accuracy", 1.0)
    assert table["equivalent"].to_list() == [True, True, False, True]
    kept = equivalence.fixed_sequence(table, GROUPS).row(0, named=True)
    assert (kept["kept_up_to_step"], kept["stopped_at_step"], kept["steps_tested"]) == (2, 3, 3)
    assert kept["kept_up_to_ratio"] == pytest.approx(0.08)
    assert kept["stop_reason"].startswith("p_tost = ")
    marked = equivalence.mark_primary(equivalence.fixed_sequence(table, GROUPS), "video_accuracy",
                                      equivalence.Primary())
    assert marked["endpoint"].to_list() == ["primary"]
    other = equivalence.mark_primary(equivalence.fixed_sequence(table, GROUPS), "video_accuracy",
                                     equivalence.Primary(model="temporal"))
    assert other["endpoint"].to_list() == ["secondary"]


def test_control_chain_is_paired_against_the_shared_unpruned_models():
    df = accuracy_frame({0: BASE, 1: [b + d for b, d in zip(BASE, DIFF)]})
    control = accuracy_frame({1: [b - 3 for b in BASE]}).with_columns(pl.lit("random").alias("chain"))
    both = pl.concat([df.with_columns(pl.lit(None, dtype=pl.String).alias("chain")), control])
    table = stats.posthoc_paired(both, GROUPS, "video_accuracy")
    by_chain = {r["chain"]: r for r in table.iter_rows(named=True)}
    assert set(by_chain) == {"slimming", "random"}  # null chain = the study's
    assert by_chain["random"]["mean_diff"] == pytest.approx(-3) and by_chain["random"]["n"] == 5
    assert by_chain["slimming"]["mean_diff"] == pytest.approx(0.06)


def test_greenhouse_geisser_at_interior_values_equals_pingouin():
    pingouin = pytest.importorskip("pingouin")
    for seed in range(3):  # random runs × steps data: ε strictly between its bounds
        m = np.random.default_rng(seed).normal(size=(6, 4)) * np.array([1.0, 2.0, 0.5, 3.0])
        long = pl.DataFrame({"run": np.repeat(np.arange(6), 4), "step": np.tile(np.arange(4), 6),
                             "value": m.ravel()}).to_pandas()
        reference = pingouin.epsilon(long, dv="value", within="step", subject="run", correction="gg")
        eps = stats.greenhouse_geisser(m)
        assert 1 / 3 < eps < 1
        assert eps == pytest.approx(reference, rel=1e-10)


def test_wilcoxon_ties_use_the_permutation_test():
    # tied |differences|: scipy ≥ 1.15 'auto' gives the exact sign-flip permutation p (2^5
    # sign patterns): all differences positive, so p = 2 / 32 exactly (normal approximation: 0.0431)
    w, p = paired.wilcoxon(np.array([1.0, 1.0, 2.0, 2.0, 3.0]))
    assert p == pytest.approx(2 / 32)


def test_settings_and_config_keys():
    settings = equivalence.Settings.from_config({"stats": {"equivalence_margin": {"irof": 0.1},
                                                           "primary": {"model": "temporal"}}})
    assert settings.margins == {"accuracy": 1.0, "irof": 0.1} and settings.primary.model == "temporal"
    with pytest.raises(ValueError, match="stats.equivalence_margin.accuracy"):
        equivalence.Settings.from_config({"stats": {"equivalence_margin": {"accuracy": 0}}})
    good = {"experiment": {"name": "ok"}, "data": {"synthetic": {"classes": 3}}}
    with pytest.raises(ConfigError, match=r"stats.equivalence_margin.accuracy: -1 is not allowed \(must be > 0\)"):
        ExperimentConfig.from_dict({**good, "stats": {"equivalence_margin": {"accuracy": -1}}})
    problems = config_problems(ExperimentConfig.from_dict({**good, "stats": {"primary": {"model": "fusion"}}}))
    assert any(p.startswith("stats.primary.model: 'fusion'") for p in problems)
    assert ExperimentConfig.from_dict(good).stats.equivalence_margin.accuracy == 1.0
