"""The sweep's data stage from an experiment config: synthetic set, then shards."""
import json

import polars as pl
import pytest

from ingest.shard_plan import OPTIONS_NAME, PARTS_DIRNAME
from ingest.stage import run_data_stage
from tests.shard_samples import TINY
from core.config import ExperimentConfig


def test_data_stage_generates_then_builds_and_resumes(tmp_path):
    cfg = ExperimentConfig.from_dict({
        "experiment": {"name": "tiny", "root": str(tmp_path / "exp")},
        "data": {"synthetic": TINY, "split": 2, "clips_per_video": 2, "test_clips": 3,
                 "short_side": 32, "workers": 1, "dis_preset": "ultrafast"}})
    summary = run_data_stage(cfg, None)
    options = json.loads((cfg.paths.shards / PARTS_DIRNAME / OPTIONS_NAME).read_text())
    assert options["flow"] == "dis" and options["flow_options"] == {"preset": "ultrafast"}
    assert (tmp_path / "exp" / "videos" / "synthetic.json").is_file()
    assert cfg.paths.shards == tmp_path / "exp" / "shards" / "split2"
    manifest = pl.read_parquet(cfg.paths.shards / "manifest.parquet")
    assert summary.ok == manifest.height == 6 and summary.samples == 4 * 2 + 2 * 3
    assert set(manifest.filter(pl.col("subset") == "test")["group"]) == {2}
    stamp = (tmp_path / "exp" / "videos" / "RedLeft" / "v_RedLeft_g01_c01.avi").stat().st_mtime_ns
    before = {p: p.read_bytes() for p in cfg.paths.shards.glob("*/shard-*.tar")}
    again = run_data_stage(cfg, None)  # everything is there: nothing is regenerated or rebuilt
    assert again.ok == 6
    assert (tmp_path / "exp" / "videos" / "RedLeft" / "v_RedLeft_g01_c01.avi").stat().st_mtime_ns == stamp
    assert {p: p.read_bytes() for p in cfg.paths.shards.glob("*/shard-*.tar")} == before


def test_dis_preset_needs_dis_flow(tmp_path):
    cfg = ExperimentConfig.from_dict({"experiment": {"root": str(tmp_path)},
                                      "data": {"synthetic": TINY, "flow": "farneback", "dis_preset": "medium"}})
    with pytest.raises(ValueError, match="data.dis_preset 'medium' is for data.flow 'dis', not 'farneback'"):
        run_data_stage(cfg, None)
