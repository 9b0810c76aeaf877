"""The report's fixed wording: what each analysis is, said once (``analysis.report`` places it)."""
from __future__ import annotations

import polars as pl

from analysis.equivalence import Settings
from analysis.paired import FEW, ZERO_SPREAD


PAIRED_TEXT = ("Paired analysis: the same runs are measured at every step, so the steps are compared "
               "within runs: a repeated-measures ANOVA over the steps (only runs present at every step), "
               "then each step against step 0.")
ORIGINAL_TEXT = ("The original study's analysis follows: steps as independent groups (between-groups "
                 "ANOVA, Bonferroni post-hoc), paired Cohen's d_z and Wilcoxon, seed-comparable with it.")
ORIGINAL = "Original study's analysis: "
CONTROLS_DRAWN = ("; the control chains (prune.chains), tested at the explained steps and the last one, as "
                  "markers at those steps (the legend names each chain)")
CONTROLS_TEXT = ("Each control chain repeats what a pruning step does but the choice of channels: "
                 "finetune_only fine-tunes the unpruned model as often and removes none, random removes "
                 "as many channels chosen at random. A difference near 0 with a narrow interval says the "
                 "control moves the metric as far as the study's chain: that change is not the pruning's own.")
QUANTUS_BASELINES = {
    "per_image_mean": "per_image_mean: a removed superpixel takes the mean of its own clip's original "
                      "input, so a clip's score depends on that clip alone",
    "quantus": "quantus: Quantus 0.6's own default (perturb_baseline=\"mean\"): the mean of the whole "
               "current batch, so a clip's score depends on the clips that share its batch",
}


def wilcoxon_floor(n: int) -> float:
    """The smallest exact two-sided Wilcoxon signed-rank p with n pairs: all signs alike, 2 / 2^n."""
    return 2.0 / 2 ** n


def wilcoxon_note(n: int | None) -> str:
    if not n:
        return ""
    floor = wilcoxon_floor(n)
    reach = "so it can never fall below 0.05" if floor >= 0.05 else "below 0.05 only with all pairs alike"
    return (f"; Wilcoxon columns: with n = {n} pairs the smallest exact two-sided p is "
            f"{floor:.4g}, {reach}")


def findings_method(settings: Settings) -> str:
    """How the findings are tested, and which family each correction covers (said once)."""
    m = settings.margins
    return (f"How: each pruned step against the unpruned step 0, runs paired. \"Within ±m\" is an "
            f"equivalence test (TOST, α = {settings.alpha:g}; margins: accuracy ±{m['accuracy']:g} "
            f"percentage points, IROF ÷ the clip's segment count ±{m['irof']:g}; stats.equivalence_margin). "
            "\"Up to X %\" is fixed-sequence testing along increasing ratio, one sequence per model, chain "
            "and metric, stopping at the first step not shown equivalent: no multiplicity penalty within "
            f"the sequence. Primary endpoint (confirmatory, α = {settings.alpha:g}): "
            f"{settings.primary.text()} (stats.primary); every other model, chain and metric is "
            "secondary, reported without correction across them. Holm's correction (post-hoc tables) "
            "covers the steps of one model, chain and metric. Δ: mean paired difference with its "
            "95 % t-interval; \"detectable at power 0.8\": the smallest true Δ a two-sided paired t-test "
            "over these runs would detect (sd of the paired differences from the data). Rows flagged "
            f"\"{FEW}\" or \"{ZERO_SPREAD}\" are not findings.")


def irof_method(config: dict, irof: pl.DataFrame) -> str:
    """What the IROF numbers are: the target explained and the baseline, beside Quantus' own."""
    explain = config.get("explain", {})
    rules = sorted(r for r in irof["target_rule"].unique().to_list() if r is not None)
    target = ", ".join(rules) or explain.get("target") or "label (files written before explain.target)"
    baseline = explain.get("baseline", "per_image_mean")
    return (f"IROF per clip exactly as Quantus 0.6 defines it (area over the curve of "
            f"p_target(x_k)/p_target(x) while superpixels are removed). Target class: {target} "
            "(predicted: the model's own decision, as Quantus' examples; label: the true class, whose "
            "ratio explodes on misclassified clips). Baseline: "
            + QUANTUS_BASELINES.get(baseline, baseline)
            + ("." if baseline == "quantus" else
               f". Beside it, not used here, {QUANTUS_BASELINES['quantus']}."))
