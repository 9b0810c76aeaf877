"""The sweep's ``data`` stage: (synthetic videos if asked) → shards of the configured split."""
from __future__ import annotations

from pathlib import Path

from ingest import synthetic
from ingest.build_shards import Summary, build_shards


def run_data_stage(cfg, ctx=None) -> Summary:
    """Reads ``cfg.data`` (see docs/ARCHITECTURE.md, "Experiment config") and ``cfg.ray.address``;
    writes ``cfg.paths.shards``. With ``data.synthetic`` the set is generated into
    ``data.videos`` (default ``<root>/videos``) unless it is already there. Resumable."""
    data = cfg.data
    if data.dis_preset is not None and data.flow != "dis":
        raise ValueError(f"config data.dis_preset {data.dis_preset!r} is for data.flow 'dis', not {data.flow!r}")
    videos, splits = data.videos, data.splits
    if data.synthetic is not None:
        videos = Path(videos) if videos else cfg.paths.root / "videos"
        if not synthetic.is_complete(videos, **data.synthetic):
            synthetic.generate(videos, **data.synthetic)
        splits = splits or videos / synthetic.SPLITS_DIRNAME
    if videos is None or splits is None:
        raise ValueError("config data: set `videos` and `splits`, or `synthetic`")
    summary = build_shards(videos, splits, data.split, cfg.paths.shards, flow=data.flow,
                           flow_bound=data.flow_bound, workers=data.workers,
                           # stored per train video; each epoch may read fewer (shards.sampling)
                           clips_per_video=data.train_clips_stored or data.clips_per_video,
                           test_clips=data.test_clips,
                           short_side=data.short_side, classes=data.classes,
                           allow_missing=data.allow_missing, address=cfg.ray.address,
                           shard_seed=data.shard_seed,
                           flow_options={"preset": data.dis_preset} if data.dis_preset else None)
    print(summary)
    return summary
