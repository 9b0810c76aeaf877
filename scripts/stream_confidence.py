"""How sure each stream is of its predictions: the mean top softmax probability over the test
videos, per chain, stream and step (mean over runs), read from a run's saved test scores
(``scores/``, the files the fuse stage reads), beside the video accuracy from the same scores.

    .venv/bin/python scripts/stream_confidence.py --experiment runs/paper_shape --steps 0 1 6

docs/results.md uses it to show fine-tuning sharpening both streams without improving them.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.cli import HelpFormatter  # noqa: E402
from core.config import CHAINS, STREAMS, ExperimentConfig  # noqa: E402


def confidence(cfg: ExperimentConfig, chain: str, stream: str, step: int) -> tuple[float, float, int] | None:
    """(mean top probability, video accuracy %, runs) over the runs whose test scores exist."""
    tops, accuracies = [], []
    for run in range(1, cfg.train.runs + 1):
        path = cfg.paths.scores(stream, run, step, "test", chain)
        if path.is_file():
            with np.load(path) as saved:
                scores, labels = saved["scores"], saved["labels"]  # softmax over the clips' mean
            tops.append(scores.max(axis=1).mean())
            accuracies.append(100 * (scores.argmax(axis=1) == labels).mean())
    return (float(np.mean(tops)), float(np.mean(accuracies)), len(tops)) if tops else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/stream_confidence.py", description=__doc__.split("\n\n")[0],
                                epilog="exit codes: 0 printed; 2 bad command line or no such experiment",
                                formatter_class=HelpFormatter)
    p.add_argument("--experiment", type=Path, required=True, help="the experiment root (runs/<name>)")
    p.add_argument("--steps", type=int, nargs="+", default=[0, 1], help="pruning steps to show")
    a = p.parse_args(argv)
    record = a.experiment / "config.json"
    if not record.is_file():
        p.error(f"{record} not found: not an experiment root")
    config = json.loads(record.read_text())["config"]
    config["experiment"]["root"] = str(a.experiment)  # where it is now, wherever it was run
    cfg = ExperimentConfig.from_dict(config)
    print("chain          stream     step  mean top probability  video accuracy (%)  runs")
    for chain in CHAINS:
        for stream in STREAMS:
            for step in a.steps:
                found = confidence(cfg, chain, stream, step)
                if found and (step > 0 or chain == CHAINS[0]):  # step 0 is every chain's, shown once
                    print(f"{chain:<14} {stream:<9} {step:>5}  {found[0]:>20.3f}  {found[1]:>18.1f}  {found[2]:>4}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
