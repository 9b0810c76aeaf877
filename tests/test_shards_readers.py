"""Written shards are readable by webdataset and by a DALI CPU pipeline with our .idx."""
import json

import numpy as np
import webdataset as wds

from shards.format import COMPONENTS, decode_sample, untile_flow
from shards.tarfiles import index_path, iter_shard


def reference(split_dir, subset="test"):
    tars = sorted((split_dir / subset).glob("shard-*.tar"))
    return tars, [decode_sample(raw, str(t)) for t in tars for raw in iter_shard(t)]


def test_webdataset_reads_every_sample(synthetic_shards):
    tars, ref = reference(synthetic_shards)
    dataset = wds.WebDataset([str(t) for t in tars], shardshuffle=False).decode("rgb8")
    got = list(dataset)
    assert [s["__key__"] for s in got] == [r.key for r in ref]
    for sample, r in zip(got, ref):
        assert set(COMPONENTS) <= set(sample)
        assert np.array_equal(sample["rgb.jpg"], r.rgb)
        assert np.array_equal(untile_flow(sample["flow.jpg"][..., 0]), r.flow_q)
        assert sample["json"]["video"] == r.meta.video and int(sample["cls"]) == r.label


def test_dali_cpu_pipeline_with_the_written_index(synthetic_shards):
    from nvidia.dali import fn, pipeline_def, types

    tars, ref = reference(synthetic_shards)

    @pipeline_def(batch_size=len(ref), num_threads=1, device_id=None, seed=0)
    def pipe():
        rgb, flow, cls, meta = fn.readers.webdataset(
            paths=[str(t) for t in tars], index_paths=[str(index_path(t)) for t in tars],
            ext=["rgb.jpg", "flow.jpg", "cls", "json"], missing_component_behavior="error")
        return (fn.decoders.image(rgb, device="cpu", output_type=types.RGB),
                fn.decoders.image(flow, device="cpu", output_type=types.GRAY), cls, meta)

    p = pipe()
    p.build()
    rgb, flow, cls, meta = p.run()
    assert len(rgb) == len(ref)
    for i, r in enumerate(ref):
        assert json.loads(bytes(meta.at(i)))["video"] == r.meta.video
        assert int(bytes(cls.at(i))) == r.label
        # DALI's and PIL's JPEG decoders may differ by a rounding step
        assert np.abs(rgb.at(i).astype(int) - r.rgb).max() <= 2
        assert np.abs(untile_flow(flow.at(i)).astype(int) - r.flow_q).max() <= 2
