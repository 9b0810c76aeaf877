"""The findings, in words, generated from the statistics tables: one row (and one sentence) per
model and chain. Nothing here is typed by hand: every number comes from ``<metric>_kept`` /
``<metric>_equivalence`` (fixed-sequence TOST, ``analysis.equivalence``), ``irof_kept`` /
``irof_equivalence`` and the saliency_change table, and every flag (n < 3, zero spread) is
carried into the sentence.

``findings_table(...)`` is what the report opens with and what the sweep prints at its end
(``terminal_text``).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import polars as pl

from . import readable
from .equivalence import Settings
from .stats import STUDY_CHAIN, with_chain
from .summary import model_label, study_rank

from .summary import CHAINS as CHAIN_ORDER
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
        value = self.table.get((model, chain, step), ratio)
        return f"{value * 100:.1f} %" if value is not None else f"step {step}"


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
        parts.append(f"{what} within {margin} of unpruned {every}up to {removed(row)} of channels removed "
                     f"(TOST {_p(row['p_tost'])}; {estimate(row)})")
    if stop is not None:
        first = "not" if kept["kept_up_to_step"] is not None else f"{what} not"
        where = "" if kept["kept_up_to_step"] is not None else ", the first pruned step"
        if stop["p_tost"] is None:
            parts.append(f"{first} testable at {removed(stop)}{where} ({stop['flag'] or 'no pairs'})")
        else:
            parts.append(f"{first} shown within {margin} at {removed(stop)} of channels removed{where} "
                         f"(TOST {_p(stop['p_tost'])}; {estimate(stop)})")
    return "; ".join(parts) or f"{what}: no pruned step"


def _saliency(change: pl.DataFrame | None) -> dict[tuple[str, str], str]:
    """Per stream and chain: the mean over runs of each run's median Spearman ρ at the last step."""
    if change is None or change.is_empty():
        return {}
    per_run = (with_chain(change).group_by("stream", "chain", "run", "step")
               .agg(pl.col("prune_ratio").mean(), pl.col("spearman").median()))
    out = {}
    for (stream, chain), part in per_run.partition_by("stream", "chain", as_dict=True).items():
        last = part.filter(pl.col("step") == part["step"].max())
        rho = last["spearman"].mean()
        if rho is not None:
            out[(stream, chain)] = (f"ρ = {rho:.2f} at {last['prune_ratio'].mean() * 100:.1f} % "
                                    f"(mean over {last.height} runs)")
    return out


def findings_table(tables: dict[str, pl.DataFrame], accuracy: pl.DataFrame, metric: str,
                   settings: Settings, saliency_change: pl.DataFrame | None = None) -> pl.DataFrame:
    kept_acc = tables.get(f"{metric}_kept")
    if kept_acc is None or kept_acc.is_empty():
        return pl.DataFrame(schema=COLUMNS)
    equiv = tables[f"{metric}_equivalence"]
    irof_kept, irof_equiv = tables.get("irof_kept"), tables.get("irof_equivalence")
    removed_pct = Removed(accuracy)
    saliency = _saliency(saliency_change)
    rows = []
    for kept in kept_acc.iter_rows(named=True):
        model, chain = model_label(kept["stream"], kept["fusion"]), kept["chain"]
        steps = equiv.filter((pl.col("stream") == kept["stream"]) & (pl.col("chain") == chain)
                             & (pl.col("fusion").eq_missing(kept["fusion"])))

        def removed(row, model=model, chain=chain):
            return removed_pct.text(model, chain, row["step"], row["prune_ratio"])
        accuracy_text = _kept_phrase(kept, steps, removed, "accuracy", " points" if metric != "loss" else "")
        irof_texts = []
        if irof_kept is not None and kept["fusion"] is None:
            for ik in irof_kept.filter((pl.col("stream") == kept["stream"]) & (pl.col("chain") == chain)).iter_rows(named=True):
                isteps = irof_equiv.filter((pl.col("stream") == kept["stream"]) & (pl.col("chain") == chain)
                                           & (pl.col("method") == ik["method"]))
                irof_texts.append(_kept_phrase(ik, isteps, removed, f"IROF ÷ segments ({ik['method']})", ""))
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
    from .results import read_table
    from .stats import compute_tables

    results = Path(root) / "results"
    with warnings.catch_warnings():  # the report lists them; the terminal summary stays short
        warnings.simplefilter("ignore")
        tables = compute_tables(results, metric, Settings.from_config(config))
    return findings_table(tables, read_table(results, "accuracy"), metric, Settings.from_config(config),
                          read_table(results, "saliency_change"))
