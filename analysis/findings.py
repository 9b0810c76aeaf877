"""The findings, in words, generated from the statistics tables: one row (and one sentence) per
model and chain. Nothing here is typed by hand: every number comes from ``<metric>_kept`` /
``<metric>_equivalence`` (fixed-sequence TOST, ``analysis.equivalence``), ``irof_kept`` /
``irof_equivalence``, ``<metric>_vs_control`` / ``irof_vs_control`` (the study's chain against
its controls, ``analysis.controls``) and the saliency_change table, and every flag (n < 3, zero spread) is
carried into the sentence.

``findings_table(...)`` is what the report opens with and what the sweep prints at its end
(``terminal_text``).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import polars as pl

from analysis import readable
from analysis.equivalence import Settings
from analysis.stats import STUDY_CHAIN, with_chain
from analysis.summary import model_label, study_rank

from analysis.summary import CHAINS as CHAIN_ORDER
COLUMNS = {"model": pl.String, "chain": pl.String, "endpoint": pl.String, "runs": pl.Int64,
           "accuracy": pl.String, "irof": pl.String, "saliency": pl.String, "note": pl.String,
           "sentence": pl.String}
# the terminal's and the report's findings table: readable headers, no sentence column
SHOWN = {"model": "model", "chain": "chain", "endpoint": "endpoint", "runs": "runs",
         "accuracy": "accuracy vs unpruned", "irof": "IROF ÷ segments vs unpruned",
         "saliency": "saliency vs unpruned (Spearman ρ)", "note": "note"}


def chain_rank(chain: str) -> tuple[int, str]:
    return (CHAIN_ORDER.index(chain) if chain in CHAIN_ORDER else len(CHAIN_ORDER), chain)


def _signed(x: float | None, unit: str = "") -> str:
    if x is None:
        return readable.DASH
    return ("+" if x > 0 else "") + readable.rounded(x).replace("-", "−") + unit


def _interval(row: dict, unit: str = "") -> str:
    if row["ci_low"] is None:
        return "no interval"
    return f"95 % CI {_signed(row['ci_low'])} to {_signed(row['ci_high'])}{unit}"


def _p(p: float | None) -> str:
    text = readable.p_value(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


class Removed:
    """Channels removed (%) per model, chain and step, measured (accuracy rows), else the ratio."""

    def __init__(self, accuracy: pl.DataFrame):
        self.table = {}
        if accuracy.height:
            acc = with_chain(accuracy)
            for r in acc.group_by("stream", "fusion", "chain", "step").agg(
                    pl.col("channels_removed").mean()).iter_rows(named=True):
                self.table[(model_label(r["stream"], r["fusion"]), r["chain"], r["step"])] = r["channels_removed"]

    def text(self, model: str, chain: str, step: int, ratio: float | None) -> str:
        """"4.0 % of channels removed"; a control that removes none (finetune_only): its step."""
        value = self.table.get((model, chain, step), ratio)
        if step == 0:
            return "unpruned"
        if value is None or round(value * 100, 1) == 0:
            return f"step {step} (no channels removed)"
        return f"{value * 100:.1f} % of channels removed"


def _kept_phrase(kept: dict, steps: pl.DataFrame, removed, what: str, unit: str) -> str:
    """"<what> within ±m of unpruned up to X % of channels removed (…); not shown at Y % (…)"."""
    by_step = {r["step"]: r for r in steps.iter_rows(named=True)}
    margin = f"±{kept['margin']:g}{unit.removesuffix('s') if kept['margin'] == 1 else unit}"

    def estimate(row):
        mde = (f", detectable at power 0.8: {readable.rounded(row['mde'])}{unit}"
               if row["mde"] is not None else "")
        return f"Δ = {_signed(row['mean_diff'], unit)}, {_interval(row, unit)}{mde}"
    parts = []
    stop = by_step.get(kept["stopped_at_step"])
    if kept["kept_up_to_step"] is not None:
        row = by_step[kept["kept_up_to_step"]]
        every = "at every step tested, " if stop is None else ""
        parts.append(f"{what} within {margin} of unpruned {every}up to {removed(row)} "
                     f"(TOST {_p(row['p_tost'])}; {estimate(row)})")
    if stop is not None:
        first = "not" if kept["kept_up_to_step"] is not None else f"{what} not"
        where = "" if kept["kept_up_to_step"] is not None else ", the first pruned step"
        if stop["p_tost"] is None:
            parts.append(f"{first} testable at {removed(stop)}{where} ({stop['flag'] or 'no pairs'})")
        else:
            parts.append(f"{first} shown within {margin} at {removed(stop)}{where} "
                         f"(TOST {_p(stop['p_tost'])}; {estimate(stop)})")
    return "; ".join(parts) or f"{what}: no pruned step"


def _versus_controls(table: pl.DataFrame | None, match: dict, removed, unit: str) -> str:
    """"slimming − control at step 6 (…): finetune_only Δ = …; random Δ = …": the study's chain
    minus each control at the first step they share, runs paired (``analysis.controls``)."""
    if table is None or table.is_empty():
        return ""
    rows = table.filter(pl.all_horizontal([pl.col(k).eq_missing(v) for k, v in match.items()]))
    if rows.is_empty():
        return ""
    first = rows.filter(pl.col("step") == rows["step"].min())
    parts = []
    for row in sorted(first.iter_rows(named=True), key=lambda r: chain_rank(r["control"])):
        test = _p(row["p_holm"]) + " Holm" if row["p_holm"] is not None else "no test"
        flag = f", {row['flag']}" if row["flag"] else ""
        parts.append(f"{row['control']} Δ = {_signed(row['diff_vs_control'], unit)} ({_interval(row, unit)}, {test}{flag})")
    row = first.row(0, named=True)
    return f"{STUDY_CHAIN} − control at step {row['step']} ({removed(row)}), runs paired: " + "; ".join(parts)


def _saliency(change: pl.DataFrame | None, removed: Removed) -> dict[tuple[str, str], str]:
    """Per stream and chain, at the last explained step: the mean over runs of each run's median
    Spearman ρ against the unpruned map (for the unpruned model's target where the table has it),
    the run-to-run reference (step-0 rows: two unpruned runs' maps) and the share of clips whose
    prediction changed."""
    if change is None or change.is_empty():
        return {}
    change = with_chain(change)
    same = "spearman_same" in change.columns and change["spearman_same"].null_count() < change.height
    column = "spearman_same" if same else "spearman"
    changed = "prediction_changed" in change.columns and change["prediction_changed"].null_count() < change.height
    per_run = (change.group_by("stream", "chain", "run", "step")
               .agg(pl.col("prune_ratio").mean(), pl.col(column).median().alias("rho"),
                    (pl.col("prediction_changed").cast(pl.Float64).mean() if changed else pl.lit(None, pl.Float64))
                    .alias("changed")))
    out = {}
    for (stream, chain), part in per_run.partition_by("stream", "chain", as_dict=True).items():
        pruned = part.filter(pl.col("step") > 0)
        if pruned.is_empty() or pruned["rho"].drop_nulls().is_empty():
            continue
        last = pruned.filter(pl.col("step") == pruned["step"].max())
        at = removed.text(stream, chain, last["step"][0], last["prune_ratio"].mean())
        text = (f"ρ = {last['rho'].mean():.2f} at {at} "
                f"({'same target, ' if same else ''}mean over {last.height} runs)")
        band = part.filter(pl.col("step") == 0)["rho"].drop_nulls()
        if band.len():
            text += f"; two unpruned runs: ρ = {band.min():.2f} to {band.max():.2f}"
        if last["changed"].drop_nulls().len():
            text += f"; prediction changed on {last['changed'].mean() * 100:.0f} % of clips"
        out[(stream, chain)] = text
    return out


def _above_random(irof: pl.DataFrame | None, removed: Removed) -> dict[tuple[str, str], str]:
    """Per stream and chain: IROF − IROF of a random segment order, ÷ segments, per-run median
    over clips, mean over runs, unpruned and at the last explained step (0 = no better than chance)."""
    if irof is None or irof.is_empty() or "irof_random" not in irof.columns or irof["irof_random"].null_count() == irof.height:
        return {}
    per_run = (with_chain(irof).filter(pl.col("irof_random").is_not_null())
               .group_by("stream", "chain", "run", "step")
               .agg(pl.col("prune_ratio").mean(),
                    ((pl.col("irof") - pl.col("irof_random")) / pl.col("n_segments")).median().alias("gain")))
    out = {}
    for (stream, chain), part in per_run.partition_by("stream", "chain", as_dict=True).items():
        steps = part.group_by("step").agg(pl.col("prune_ratio").mean(), pl.col("gain").mean()).sort("step")
        first, last = steps.row(0, named=True), steps.row(-1, named=True)
        def at(row):
            return removed.text(stream, chain, row["step"], row["prune_ratio"])
        text = f"IROF − random order (÷ segments): {_signed(first['gain'])} {'' if first['step'] == 0 else 'at '}{at(first)}"
        if last["step"] != first["step"]:
            text += f", {_signed(last['gain'])} at {at(last)}"
        out[(stream, chain)] = text
    return out


def findings_table(tables: dict[str, pl.DataFrame], accuracy: pl.DataFrame, metric: str,
                   settings: Settings, saliency_change: pl.DataFrame | None = None,
                   irof: pl.DataFrame | None = None) -> pl.DataFrame:
    kept_acc = tables.get(f"{metric}_kept")
    if kept_acc is None or kept_acc.is_empty():
        return pl.DataFrame(schema=COLUMNS)
    equiv = tables[f"{metric}_equivalence"]
    irof_kept, irof_equiv = tables.get("irof_kept"), tables.get("irof_equivalence")
    removed_pct = Removed(accuracy)
    saliency, above_random = _saliency(saliency_change, removed_pct), _above_random(irof, removed_pct)
    rows = []
    for kept in kept_acc.iter_rows(named=True):
        model, chain = model_label(kept["stream"], kept["fusion"]), kept["chain"]
        steps = equiv.filter((pl.col("stream") == kept["stream"]) & (pl.col("chain") == chain)
                             & (pl.col("fusion").eq_missing(kept["fusion"])))

        def removed(row, model=model, chain=chain):
            return removed_pct.text(model, chain, row["step"], row["prune_ratio"])
        unit = " points" if metric != "loss" else ""
        accuracy_text = _kept_phrase(kept, steps, removed, "accuracy", unit)
        if chain == STUDY_CHAIN:
            against = _versus_controls(tables.get(f"{metric}_vs_control"),
                                       {"stream": kept["stream"], "fusion": kept["fusion"]}, removed, unit)
            accuracy_text += f". {against}" if against else ""
        irof_texts = []
        if irof_kept is not None and kept["fusion"] is None:
            for ik in irof_kept.filter((pl.col("stream") == kept["stream"]) & (pl.col("chain") == chain)).iter_rows(named=True):
                isteps = irof_equiv.filter((pl.col("stream") == kept["stream"]) & (pl.col("chain") == chain)
                                           & (pl.col("method") == ik["method"]))
                irof_texts.append(_kept_phrase(ik, isteps, removed, f"IROF ÷ segments ({ik['method']})", ""))
                if chain == STUDY_CHAIN:
                    against = _versus_controls(tables.get("irof_vs_control"),
                                               {"stream": kept["stream"], "method": ik["method"]}, removed, "")
                    irof_texts += [against] if against else []
            if (kept["stream"], chain) in above_random:
                irof_texts.append(above_random[(kept["stream"], chain)])
        flags = sorted({f for f in steps["flag"].to_list() if f})
        runs = int(steps["n"].min()) if steps.height and steps["n"].min() is not None else 0
        note = ("; ".join(flags) + ": not a finding") if flags else ""
        sal = saliency.get((kept["stream"], chain), "") if kept["fusion"] is None else ""
        head = f"{model}, {chain}" + (" (primary endpoint)" if kept.get("endpoint") == "primary" else "")
        sentence = f"{head}: {accuracy_text}" + "".join(f". {t}" for t in irof_texts) + (
            f". Saliency vs unpruned: {sal}" if sal else "") + (f" [{note}]" if note else "") + "."
        rows.append({"model": model, "chain": chain, "endpoint": kept.get("endpoint"), "runs": runs,
                     "accuracy": accuracy_text, "irof": "; ".join(irof_texts) or readable.DASH,
                     "saliency": sal or readable.DASH, "note": note, "sentence": sentence})
    rows.sort(key=lambda r: (r["endpoint"] != "primary", study_rank(r["model"]), chain_rank(r["chain"])))
    return pl.DataFrame(rows, schema=COLUMNS, orient="row")


def shown(findings: pl.DataFrame) -> pl.DataFrame:
    """The findings as a table for readers (no sentence column, readable headers)."""
    return findings.select(list(SHOWN)).rename(SHOWN)


def terminal_text(findings: pl.DataFrame) -> str:
    """The sweep's closing summary: one block per model and chain, nothing cut, no NaN."""
    if findings.is_empty():
        return "findings: no pruned step to compare with the unpruned models yet"
    lines = ["findings (fixed-sequence TOST against step 0; table: report/tables/findings.csv)"]
    for row in findings.iter_rows(named=True):
        lines.append(f"- {row['sentence']}")
    return "\n".join(lines)


def for_experiment(root: Path, config: dict | None, metric: str = "video_accuracy") -> pl.DataFrame:
    """The findings of the experiment under ``root`` from its results store alone."""
    from core.results import read_table
    from analysis.stats import compute_tables

    results = Path(root) / "results"
    with warnings.catch_warnings():  # the report lists them; the terminal summary stays short
        warnings.simplefilter("ignore")
        tables = compute_tables(results, metric, Settings.from_config(config))
    return findings_table(tables, read_table(results, "accuracy"), metric, Settings.from_config(config),
                          read_table(results, "saliency_change"), read_table(results, "irof"))
