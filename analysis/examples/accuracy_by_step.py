"""Mean video accuracy per stream and pruning step, straight from the results store.

    python analysis/examples/accuracy_by_step.py runs/demo/results

Each table is a folder of Parquet files partitioned like ``accuracy/spatial/run1/step3.parquet``;
``hive_partitioning=False`` because the folders are names, not ``key=value`` pairs. ``chain``
(slimming, or a control: finetune_only, random) is null in files written before chains existed:
those rows are slimming's.
"""
import sys

import polars as pl

results = sys.argv[1] if len(sys.argv) > 1 else "runs/demo/results"
table = (pl.scan_parquet(f"{results}/accuracy/**/*.parquet", hive_partitioning=False,
                         missing_columns="insert", extra_columns="ignore")
         .with_columns(pl.col("chain").fill_null("slimming"))
         .sort("written_at").unique(["experiment", "stream", "fusion", "chain", "run", "step", "split"], keep="last")
         .group_by("stream", "fusion", "chain", "step")
         .agg(pl.col("prune_ratio").first(), pl.col("video_accuracy").mean().alias("video_acc"),
              pl.len().alias("runs"))
         .sort("stream", "fusion", "chain", "step", nulls_last=False)
         .collect())
print(table)
