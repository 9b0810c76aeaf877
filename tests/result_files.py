"""Rows and damaged files for results-store and statistics tests: valid accuracy rows, and a
Parquet part cut short as a crash on a network filesystem leaves it."""
from __future__ import annotations

from datetime import datetime, timezone

import polars as pl

from core.results import to_arrow

FINISHED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def accuracy_row(**changes) -> dict:
    row = dict(experiment="exp", stream="spatial", run=1, seed=11, step=0, prune_ratio=0.0,
               channels_removed=0.0, params_removed=0.0, flops_removed=0.0, split=1,
               clip_accuracy=50.0, video_accuracy=60.0, video_top5=90.0, loss=1.5, n_videos=30,
               checkpoint="checkpoints/spatial/run1/step0.pt", finished_at=FINISHED)
    return row | changes


def cut_short(path, keep: float = 0.5) -> None:
    """What a crash on a network filesystem leaves: the file's first part only."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def accuracy_rows(values: dict[int, list[float | None]], stream="spatial", fusion=None) -> list[dict]:
    """Accuracy rows from ``{step: [video accuracy of run 1, run 2, …]}`` (None: no row)."""
    return [dict(experiment="exp", stream=stream, fusion=fusion, run=run, seed=run, step=step,
                 prune_ratio=0.04 * step, channels_removed=0.04 * step, params_removed=0.07 * step,
                 flops_removed=0.05 * step, split=1, clip_accuracy=v - 5, video_accuracy=float(v),
                 video_top5=95.0, loss=1.0, n_videos=20, checkpoint=None,
                 finished_at=datetime(2026, 1, 1, tzinfo=timezone.utc))
            for step, vs in values.items() for run, v in enumerate(vs, start=1) if v is not None]


def accuracy_frame(values, **kw) -> pl.DataFrame:
    """``accuracy_rows`` as the results store reads them (same column types)."""
    return pl.from_arrow(to_arrow("accuracy", accuracy_rows(values, **kw), datetime.now(timezone.utc)))


def irof_rows(run: int, step: int, n: int) -> list[dict]:
    return [dict(experiment="exp", stream="temporal", run=run, step=step, prune_ratio=step * 0.04,
                 video=f"v{i}", clip=0, label=i % 3, target=i % 3, predicted=0, method="vg",
                 irof=0.1 * i, n_segments=40, seconds=0.5) for i in range(n)]
