"""The Polars examples in analysis/examples run against a results store and print the tables."""
from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from core.results import write_rows

EXAMPLES = Path(__file__).resolve().parents[1] / "analysis" / "examples"
NOW = datetime.now(timezone.utc)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    for step, ratio in ((0, 0.0), (1, 0.3)):
        for run in (1, 2):
            write_rows(out, "accuracy", [dict(
                experiment="e", stream="spatial", run=run, seed=run, step=step, prune_ratio=ratio,
                channels_removed=ratio, params_removed=ratio, flops_removed=ratio, split=1,
                clip_accuracy=50.0, video_accuracy=60.0 + run - 10 * step, video_top5=90.0, loss=1.0,
                n_videos=10, finished_at=NOW)], partition=f"spatial/run{run}/step{step}")
            if step:  # a control chain at the same step: a row of its own, not a newer duplicate
                write_rows(out, "accuracy", [dict(
                    experiment="e", stream="spatial", run=run, seed=run, step=step, prune_ratio=ratio,
                    channels_removed=0.0, params_removed=0.0, flops_removed=0.0, split=1, chain="finetune_only",
                    clip_accuracy=50.0, video_accuracy=70.0 + run, video_top5=90.0, loss=1.0,
                    n_videos=10, finished_at=NOW)], partition=f"finetune_only/spatial/run{run}/step{step}")
            write_rows(out, "irof", [dict(
                experiment="e", stream="spatial", run=run, step=step, prune_ratio=ratio, video="v",
                clip=c, label=0, target=0, predicted=0, method="saliency", irof=0.1 * c + step,
                n_segments=20, seconds=0.1) for c in range(3)], partition=f"spatial/run{run}/step{step}")
            write_rows(out, "epochs", [dict(
                experiment="e", stream="spatial", run=run, step=step, epoch=e, phase="val", loss=1.0 / e,
                accuracy=10.0 * e, lr=0.01, seconds=1.0) for e in (1, 2)], partition=f"spatial/run{run}/step{step}")
    return out


@pytest.mark.parametrize("script, expected", [
    ("accuracy_by_step.py", ["video_acc", "61.5", "51.5", "finetune_only", "71.5"]),
    ("irof_by_method.py", ["irof_mean", "saliency", "1.1"]),
    ("training_curves.py", ["accuracy", "20.0"]),
])
def test_example_runs_and_prints_its_table(results, script, expected):
    out = subprocess.run([sys.executable, str(EXAMPLES / script), str(results)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for text in expected:
        assert text in out.stdout, out.stdout
