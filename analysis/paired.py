"""Paired differences of one step against step 0, and the statistics on them that stay honest
on degenerate input.

Runs are paired by their ``run`` index. Accuracies are counts ÷ N, so two runs that gain the
same number of videos have differences that are equal but for float rounding (1/6·100 − 0 and
2/6·100 − 1/6·100 differ in the 15th digit): their sd is ~1e-15, not 0, and d_z = mean / sd
became −5.5e14 in the demo. Differences are therefore rounded to ``DECIMALS`` places before any
statistic (as scipy advises for Wilcoxon ties); a group whose differences are then all equal
has *zero spread*: no t, d_z, p or interval (null, flagged), never an extreme number.

``flag(n, diff)`` is the note every paired table carries: ``n < 3`` (too few runs for an
interval or test to be a finding) and ``zero spread``.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

# accuracies are in % (steps of 100 / N videos, N ≤ ~4000: ≥ 0.025) and IROF values are O(1):
# 1e-9 is far below any real difference and far above float rounding (~1e-13 at these sizes)
DECIMALS = 9
MIN_PAIRS = 3  # below this an interval or test is shown but flagged "n < 3": not a finding
ALPHA = 0.05
POWER = 0.8  # of the minimal detectable effect
FEW = f"n < {MIN_PAIRS}"
ZERO_SPREAD = "zero spread"


def number(x) -> float | None:
    """A finite float, or None (null in the tables) for NaN, inf and missing values."""
    return float(x) if x is not None and math.isfinite(x) else None


def aligned(runs: np.ndarray, x: np.ndarray, base_runs: np.ndarray, base: np.ndarray):
    """(x, base) over the runs present at both steps, in run order."""
    _, i_x, i_base = np.intersect1d(runs, base_runs, return_indices=True)
    return x[i_x], base[i_base]


def differences(x: np.ndarray, base: np.ndarray) -> np.ndarray:
    """x − base, rounded to ``DECIMALS`` places: equal differences compare equal."""
    return np.round(np.asarray(x, dtype=float) - np.asarray(base, dtype=float), DECIMALS)


def has_spread(diff: np.ndarray) -> bool:
    return len(diff) >= 2 and bool(np.any(diff != diff[0]))


def flag(diff: np.ndarray) -> str:
    """``n < 3``, ``zero spread`` (≥ 2 equal differences), both (``; ``-joined) or empty."""
    notes = [FEW] if len(diff) < MIN_PAIRS else []
    if len(diff) >= 2 and not has_spread(diff):
        notes.append(ZERO_SPREAD)
    return "; ".join(notes)


def sd(diff: np.ndarray) -> float | None:
    return float(np.std(diff, ddof=1)) if len(diff) >= 2 else None


def t_test(diff: np.ndarray) -> tuple[float | None, float | None]:
    """Paired t (one-sample t of the differences against 0) and its two-sided p; None without spread."""
    if not has_spread(diff):
        return None, None
    res = stats.ttest_1samp(diff, 0.0)
    return number(res.statistic), number(res.pvalue)


def cohens_dz(diff: np.ndarray) -> float | None:
    """Mean / sd of the differences (positive when the step raises the metric); None without spread."""
    return float(np.mean(diff) / np.std(diff, ddof=1)) if has_spread(diff) else None


def wilcoxon(diff: np.ndarray, method: str = "exact") -> tuple[float | None, float | None]:
    """Two-sided signed-rank test of the differences. ``exact``: the exact null distribution when
    no difference is zero or tied (scipy's exact null assumes neither), else ``auto`` (scipy ≥ 1.15:
    a sign-flip permutation test, exact for n ≤ 13). ``auto`` throughout is the original study's
    choice. None when every difference is zero (no signed ranks)."""
    if not np.any(diff != 0):
        return None, None
    untied = np.all(diff != 0) and len(np.unique(np.abs(diff))) == len(diff)
    res = stats.wilcoxon(diff, alternative="two-sided", method="exact" if method == "exact" and untied else "auto")
    return number(res.statistic), number(res.pvalue)


def mean_ci(diff: np.ndarray, level: float = 0.95) -> tuple[float | None, float | None]:
    """t-interval of the mean difference (statsmodels ``DescrStatsW.tconfint_mean``); None
    below 2 pairs or without spread (a zero-width interval would claim certainty it lacks)."""
    from statsmodels.stats.weightstats import DescrStatsW

    if not has_spread(diff):
        return None, None
    low, high = DescrStatsW(diff).tconfint_mean(alpha=1 - level)
    return number(low), number(high)


def minimal_detectable_effect(diff: np.ndarray, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """The smallest true mean difference a two-sided paired t-test over these runs detects with
    ``power`` at ``alpha``: statsmodels ``TTestPower`` solves for d_z at n pairs, times the
    observed sd of the differences (the metric's units). None below 2 pairs or without spread."""
    from statsmodels.stats.power import TTestPower

    if not has_spread(diff):
        return None
    d = TTestPower().solve_power(effect_size=None, nobs=len(diff), alpha=alpha, power=power,
                                 alternative="two-sided")
    return number(d * np.std(diff, ddof=1))


def tost(diff: np.ndarray, margin: float) -> float | None:
    """Two one-sided tests of |mean difference| < margin (statsmodels ``ttost_paired``): the
    larger of the two one-sided p. None below 2 pairs or without spread."""
    from statsmodels.stats.weightstats import ttost_paired

    if not has_spread(diff):
        return None
    p, _, _ = ttost_paired(diff, np.zeros_like(diff), -margin, margin)
    return number(p)


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm step-down adjusted p (statsmodels ``multipletests``) over the non-null values."""
    from statsmodels.stats.multitest import multipletests

    present = [i for i, p in enumerate(p_values) if p is not None]
    out: list[float | None] = [None] * len(p_values)
    if present:
        adjusted = multipletests([p_values[i] for i in present], method="holm")[1]
        for i, p in zip(present, adjusted):
            out[i] = float(p)
    return out
