"""The shared synthetic fixtures: the set is complete and its shards decode."""
import polars as pl

from shards.format import decode_sample
from shards.tarfiles import iter_shard


def test_synthetic_shards_decode(synthetic_shards):
    manifest = pl.read_parquet(synthetic_shards / "manifest.parquet")
    assert manifest.height == 48 and (manifest["status"] == "ok").all()
    assert manifest.filter(pl.col("subset") == "test")["group"].unique().to_list() == [1]
    keys = []
    for tar in sorted(synthetic_shards.glob("*/shard-*.tar")):
        for raw in iter_shard(tar):
            sample = decode_sample(raw, source=str(tar))
            assert sample.rgb.shape == (64, 86, 3) and sample.flow_q.shape == (20, 64, 86)
            keys.append(sample.key)
    assert len(keys) == len(set(keys)) == 48 * 5 == manifest["clips"].sum()
