"""Last-epoch validation loss/accuracy per stream, run and step.

    python analysis/examples/training_curves.py runs/demo/results
"""
import sys

import polars as pl

results = sys.argv[1] if len(sys.argv) > 1 else "runs/demo/results"
curves = pl.scan_parquet(f"{results}/epochs/**/*.parquet", hive_partitioning=False,
                         missing_columns="insert", extra_columns="ignore")
table = (curves.filter(pl.col("phase") == "val")
         .with_columns(pl.col("chain").fill_null("slimming"))  # null: written before chains
         .sort("epoch").group_by("stream", "chain", "run", "step").last()
         .select("stream", "chain", "run", "step", "epoch", "loss", "accuracy")
         .sort("stream", "chain", "run", "step")
         .collect())
print(table)
