"""Flow quantisation and tiling round trips (the shard format's numeric contract)."""
import numpy as np

from shards.format import (DEFAULT_FLOW_BOUND, STACK, dequantise_flow, quantisation_step,
                           quantise_flow, tile_flow, untile_flow)


def test_quantisation_round_trip_within_half_a_step():
    flow = np.random.default_rng(0).uniform(-30, 30, (STACK, 9, 7, 2)).astype(np.float32)
    back = dequantise_flow(quantise_flow(flow))
    inside = np.abs(flow) <= DEFAULT_FLOW_BOUND
    assert np.abs(back - flow)[inside].max() <= quantisation_step() / 2 + 1e-5
    assert np.allclose(back[~inside], np.sign(flow[~inside]) * DEFAULT_FLOW_BOUND)  # clipped
    # fixed bound, never min-max: the same value quantises the same in any image
    assert quantise_flow(np.array([0.0, 1.0, -20.0, 20.0])).tolist() == [128, 134, 0, 255]


def test_quantisation_equals_its_definition_exactly_ties_and_clipping_included():
    """The in-place computation gives the bytes of round(clip(f, -B, B) * 127.5 / B + 127.5)."""
    for bound in (DEFAULT_FLOW_BOUND, 7.3):
        dense = np.linspace(-1.2 * bound, 1.2 * bound, 400_001, dtype=np.float32)
        ties = (np.arange(-255, 256, dtype=np.float32) / 2) * np.float32(bound / 127.5)  # half steps
        for f in (dense, ties, np.array([np.inf, -np.inf, 1e9, -1e9], np.float32)):
            k = np.float32(127.5 / bound)
            expected = np.rint(np.clip(f, -bound, bound).astype(np.float32) * k + np.float32(127.5))
            assert np.array_equal(quantise_flow(f, bound), expected.astype(np.uint8))


def test_tiling_keeps_fields_in_order():
    rng = np.random.default_rng(1)
    fields = rng.uniform(-5, 5, (STACK, 4, 6, 2)).astype(np.float32)
    tiled = tile_flow(fields)
    assert tiled.shape == (2 * STACK * 4, 6) and tiled.dtype == np.uint8
    planes = untile_flow(tiled)
    assert np.shares_memory(planes, tiled)
    assert np.array_equal(planes[:STACK], quantise_flow(fields[..., 0]))  # x fields first
    assert np.array_equal(planes[STACK:], quantise_flow(fields[..., 1]))  # then y fields
    assert np.array_equal(tiled[4:8], quantise_flow(fields[1, ..., 0]))
