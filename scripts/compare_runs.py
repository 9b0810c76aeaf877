"""Are two runs' result tables equal? The accuracy, IROF and γ tables of two experiment roots,
row for row, leaving out what differs between equal runs by nature: provenance (when, where,
which commit, config and checkpoint hashes, checkpoint paths) and timings.

    .venv/bin/python scripts/compare_runs.py runs/demo /elsewhere/runs/demo

Issue 28 used it to show the re-layout changed no result (the demo before and after the move).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.cli import HelpFormatter  # noqa: E402
from core.results import RUN_SPECIFIC, read_table  # noqa: E402

TABLES = ("accuracy", "irof", "gammas")


def compared(root: Path, table: str):
    rows = read_table(root / "results", table)
    kept = [c for c in rows.columns if c not in RUN_SPECIFIC]
    return rows.select(kept).sort(kept, nulls_last=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/compare_runs.py", description=__doc__.split("\n")[0],
                                epilog="exit codes: 0 every table equal; 1 a table differs; 2 bad command line",
                                formatter_class=HelpFormatter)
    p.add_argument("a", type=Path, help="an experiment root (runs/<name>)")
    p.add_argument("b", type=Path, help="another experiment root")
    a = p.parse_args(argv)
    for root in (a.a, a.b):
        if not (root / "results").is_dir():
            p.error(f"{root}: no results/ folder (not an experiment root)")
    differ = 0
    for table in TABLES:
        x, y = compared(a.a, table), compared(a.b, table)
        same = x.columns == y.columns and x.equals(y)
        print(f"{table}: {x.height} and {y.height} rows, {len(x.columns)} columns compared: "
              + ("equal" if same else "DIFFERENT"))
        if not same and x.columns == y.columns and x.height == y.height:
            print("  differing columns:", [c for c in x.columns if not x[c].equals(y[c])])
        differ += not same
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
