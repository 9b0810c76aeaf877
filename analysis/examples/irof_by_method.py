"""IROF per saliency method and pruning step (mean and spread over explained clips).

    python analysis/examples/irof_by_method.py runs/demo/results
"""
import sys

import polars as pl

results = sys.argv[1] if len(sys.argv) > 1 else "runs/demo/results"
table = (pl.scan_parquet(f"{results}/irof/**/*.parquet", hive_partitioning=False,
                         missing_columns="insert", extra_columns="ignore")
         .with_columns(pl.col("chain").fill_null("slimming"))  # null: written before chains
         .group_by("stream", "method", "chain", "step")
         .agg(pl.col("irof").mean().alias("irof_mean"), pl.col("irof").std().alias("irof_std"),
              pl.col("irof_random").mean().alias("irof_random_mean"), pl.len().alias("clips"))
         .sort("stream", "method", "chain", "step")
         .collect())
print(table)
