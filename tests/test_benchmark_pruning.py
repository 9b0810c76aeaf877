"""benchmarks/pruning.py (issue #21): both pruning modes and several thread counts in one call,
a row per (arch, stream, pruning, threads, step), the per-layer profile, and the paper config's
pruning settings accepted by validation."""
from __future__ import annotations

import argparse

import polars as pl
import pytest
import torch

from benchmarks import pruning as bench
from core.config import ConfigError, ExperimentConfig
from core.overrides import load_config
from pipeline.validation import config_problems
from tests.layout import REPO


def tiny(**overrides) -> argparse.Namespace:
    """A resnet18 at 32 px, one timed pass: the code paths, not the speed."""
    args = bench.parse_args(["--archs", "resnet18", "--streams", "spatial", "temporal", "--steps", "7", "14",
                             "--batch-sizes", "1", "2", "--input-size", "32", "--repeats", "1",
                             "--pruning", "internal", "residual", "--threads", "1", "2"])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def test_parse_modes_threads_and_defaults():
    args = bench.parse_args([])
    assert args.pruning == ["internal"]  # the paper config's prune.residual: false
    assert args.threads is None and args.steps == list(range(1, 18)) and args.round_to == 8
    args = bench.parse_args(["--pruning", "internal", "residual", "--threads", "1", "2", "--round-to", "32",
                             "--channels-last", "--fold-bn", "--layers"])
    assert args.pruning == ["internal", "residual"] and args.threads == [1, 2] and args.round_to == 32
    assert args.channels_last and args.fold_bn and args.layers


@pytest.mark.parametrize("argv", [["--pruning", "all"], ["--threads", "0"], ["--round-to", "0"],
                                  ["--steps", "0"], ["--batch-sizes", "0"]])
def test_bad_options_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(argv)
    assert exit_info.value.code == 2


def test_a_row_per_arch_stream_mode_threads_step_and_modes_differ_as_expected():
    threads = torch.get_num_threads()
    try:
        table = bench.benchmark(tiny())
    finally:
        torch.set_num_threads(threads)
    assert table.height == 2 * 2 * 2 * 2  # streams × modes × threads × steps
    keys = table.select("stream", "pruning", "threads", "step").unique()
    assert keys.height == table.height
    assert set(table["threads"]) == {1, 2}
    for column in ("flops_speedup", "latency_speedup_b1", "efficiency_b2", "base_ms_b2", "load_1min"):
        assert table[column].null_count() == 0, column
    assert set(table["round_to"]) == {8} and not any(table["fold_bn"])
    for stream in ("spatial", "temporal"):
        for step in (7, 14):
            rows = {r["pruning"]: r for r in table.filter((table["stream"] == stream) & (table["step"] == step)
                                                           & (table["threads"] == 1)).iter_rows(named=True)}
            # the same share of prunable channels: residual pruning also thins the block outputs, so
            # both the inputs and outputs of most convolutions shrink and more FLOPs go
            assert rows["residual"]["flops_removed"] > rows["internal"]["flops_removed"] > 0
            assert rows["residual"]["flops_speedup"] > rows["internal"]["flops_speedup"] > 1
            assert rows["internal"]["prune_ratio"] == pytest.approx(100 * (1 - 0.96 ** step), abs=0.01)
    lines = bench.goal_lines(table, [1, 2])
    assert len(lines) == table.height * 2 and all(("meets" in x) != ("misses" in x) for x in lines)


def test_a_namespace_built_like_gpu_checks_works():
    """benchmarks.gpu_check builds its own namespace (no CLI-only options, ``threads=None``)."""
    args = argparse.Namespace(archs=["resnet18"], streams=["spatial"], steps=[14], batch_sizes=[1],
                              input_size=32, repeats=1, pruning=["internal", "residual"], min_channels=8, round_to=8,
                              channels_last=True, threads=None, seed=0, csv=None, device="cpu", amp=False)
    table = bench.benchmark(args)
    assert table["pruning"].to_list() == ["internal", "residual"] and table["channels_last"].to_list() == [True, True]
    assert table["threads"].to_list() == [torch.get_num_threads()] * 2


def test_fold_bn_keeps_the_function_and_drops_the_batchnorms():
    model = bench.random_gammas(bench.build_stream("temporal", "resnet18", 5), 0)
    folded = bench.fold_bn(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 20, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the input is left alone


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_layer_profile_kinds_and_flops_add_up(arch):
    from pruning import prune_model
    from pruning.accounting import count_flops
    model = bench.random_gammas(bench.build_stream("spatial", arch, 5), 0)
    pruned = prune_model(model, 0.4353, round_to=8)
    kinds = bench.layer_kinds(model)
    bns = [k for n, k in kinds.items() if k.startswith("bn ")]
    assert bns.count("bn internal") == {"resnet18": 8, "resnet50": 32}[arch]  # blocks × (1 or 2)
    profile = bench.layer_profile(model, pruned, torch.randn(1, 3, 32, 32), repeats=1)
    assert profile["layers"][0] == "total"
    total = profile.filter(profile["layers"] == "total").row(0, named=True)
    assert total["base_gflops"] == pytest.approx(count_flops(model, 32) / 1e9, abs=1e-3)
    assert total["pruned_gflops"] == pytest.approx(count_flops(pruned, 32) / 1e9, abs=1e-3)
    parts = profile.filter(profile["layers"] != "total")
    assert parts["base_gflops"].sum() == pytest.approx(total["base_gflops"], abs=1e-3 * parts.height)  # rounded parts
    # internal pruning leaves the stem, downsample and residual BatchNorms alone
    for kind in ("stem conv", "downsample conv"):
        row = parts.filter(parts["layers"] == kind).row(0, named=True)
        assert row["base_gflops"] == row["pruned_gflops"] > 0
    assert set(parts["layers"]) >= {"stem conv", "bn internal", "bn residual", "relu", "block add", "fc"}


def test_paper_config_pruning_settings_validate():
    cfg = load_config(REPO / "ray_configs" / "ucf101_split3.yaml")
    assert cfg.prune.residual is False and cfg.prune.round_to >= 8 and cfg.prune.round_to % 8 == 0
    assert [p for p in config_problems(cfg) if p.startswith("prune.")] == []
    for round_to in (8, 16, 32):
        data = {"experiment": {"name": "ok"}, "data": {"synthetic": {"classes": 3}}, "prune": {"round_to": round_to}}
        assert config_problems(ExperimentConfig.from_dict(data)) == []
    data = {"experiment": {"name": "ok"}, "data": {"synthetic": {"classes": 3}}, "prune": {"round_to": 0}}
    with pytest.raises(ConfigError, match=r"prune.round_to: 0 is not allowed \(must be > 0\)"):
        ExperimentConfig.from_dict(data)


def test_prune_model_keeps_a_channels_last_model_channels_last():
    """The benchmark times channels_last models (the paper config trains with train.channels_last)."""
    from pruning import prune_model
    model = bench.random_gammas(bench.build_stream("spatial", "resnet18", 5), 0).to(memory_format=torch.channels_last)
    pruned = prune_model(model, 0.4353, round_to=8)
    convs = [m for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert not pruned.layer1[0].conv1.weight.is_contiguous()  # a pruned 3×3 conv, really channels_last
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert pruned(x).shape == (1, 5)
    plain = prune_model(bench.random_gammas(bench.build_stream("spatial", "resnet18", 5), 0), 0.4353, round_to=8)
    assert plain.layer1[0].conv1.weight.is_contiguous()  # an NCHW model stays NCHW


def test_from_csv_regenerates_the_readme_table_without_measuring(tmp_path, capsys, monkeypatch):
    table = bench.benchmark(tiny(streams=["spatial"], threads=[1]))
    csv, md = tmp_path / "grid.csv", tmp_path / "grid.md"
    table.write_csv(csv)
    monkeypatch.setattr(bench, "benchmark", lambda *a, **k: pytest.fail("measured"))
    bench.main(["--from-csv", str(csv), "--markdown", str(md)])
    text = md.read_text().splitlines()
    assert text[0].startswith("| arch | stream | pruning | threads | setting | row | k=7 (24.86 %) | k=14 (43.53 %) |")
    # per (arch, stream, mode, threads, setting): a FLOPs row and one per batch size
    assert len(text) == 2 + 2 * 3
    assert sum("FLOPs speedup" in line for line in text) == 2 and sum("eff. b2" in line for line in text) == 2
    assert "NCHW, round_to 8" in text[2] and "BN folded" not in md.read_text()
    table.with_columns(fold_bn=True).write_csv(csv)
    bench.main(["--from-csv", str(csv), "--markdown", str(md)])
    assert "NCHW, round_to 8, BN folded" in md.read_text().splitlines()[2]
    out = capsys.readouterr().out
    assert "efficiency" in out
    assert "nothing measured" in out and "median of 10" not in out  # no settings of this command line claimed


def test_flops_paced_efficiency_replaces_each_layer_by_its_flops_pace():
    # convs: 60 ms -> 40 ms measured at a 2x FLOPs speedup (30 ms if paced); BN 20 -> 20 ms; 10 ms between hooks
    profile = pl.DataFrame({"layers": ["total", "conv", "bn"], "base_ms": [90.0, 60.0, 20.0],
                            "pruned_ms": [70.0, 40.0, 20.0], "flops_speedup": [2.0, 2.0, None]})
    speedup, efficiency = bench.flops_paced_efficiency(profile)
    assert speedup == pytest.approx(90 / 60) and efficiency == pytest.approx(90 / 60 / 2)


@pytest.mark.parametrize("fold", [False, True])
def test_layers_profile_the_eager_models_even_when_timing_folded_ones(fold):
    profiles = []
    threads = torch.get_num_threads()
    try:
        bench.benchmark(tiny(streams=["spatial"], pruning=["internal"], steps=[14], threads=[1], layers=True,
                             fold_bn=fold), profiles)
    finally:
        torch.set_num_threads(threads)
    assert len(profiles) == 1
    title, profile = profiles[0]
    assert "step 14" in title and "batch 1" in title
    kinds = set(profile["layers"])
    assert {"bn internal", "bn residual"} <= kinds  # BatchNorms still there: the unfolded models were hooked
    bn = profile.filter(profile["layers"] == "bn internal").row(0, named=True)
    assert bn["base_ms"] > 0 and bn["pruned_ms"] > 0
