"""Figures: each is written as a PNG and plots exactly the numbers of the tables."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from matplotlib.colors import to_hex
from PIL import Image

from analysis import figures, stats
from core.results import read_table
from tests.report_experiments import FIGURE_VIDEO, RUNS, STEPS, STREAMS, build_experiment



@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    return build_experiment(tmp_path_factory.mktemp("experiment"))


def is_print_png(path: Path) -> bool:
    with Image.open(path) as image:
        dpi = image.info.get("dpi", (0, 0))
        # full print resolution, or lowered just enough to keep a wide figure within the width limit
        full_or_capped = round(dpi[0]) == figures.DPI or image.width > 0.9 * figures.MAX_WIDTH_PX
        return (image.format == "PNG" and full_or_capped and image.width <= figures.MAX_WIDTH_PX
                and min(image.size) > 300)


def test_accuracy_figures_plot_the_tables(experiment, tmp_path):
    accuracy = read_table(experiment / "results", "accuracy")
    tables = stats.all_tables(accuracy, stats.ACCURACY_GROUPS, "video_accuracy")
    per_run = figures.accuracy_per_run(accuracy, "video_accuracy", tmp_path / "per_run.png")
    assert is_print_png(per_run.path)
    assert per_run.data["stream"].unique().sort().to_list() == list(STREAMS)
    assert per_run.data.height == 2 * 3 * 4 - 1  # the missing temporal run 3 at step 3
    expected = accuracy.filter(pl.col("stream") != "fusion").sort("stream", "run", "step")
    assert per_run.data["video_accuracy"].to_list() == expected["video_accuracy"].to_list()

    mean_sd = figures.mean_sd(tables["summary"], "video accuracy (%)", tmp_path / "mean_sd.png")
    assert is_print_png(mean_sd.path)
    assert mean_sd.data.sort("model", "step")["mean"].to_list() == (
        figures.with_model(tables["summary"]).sort("model", "step")["mean"].to_list())
    assert set(mean_sd.data["model"]) == {"spatial", "temporal", "fusion: mean", "fusion: svm_softmax"}

    boxes = figures.boxplots(accuracy, "video_accuracy", "video accuracy (%)", tmp_path / "box.png")
    assert is_print_png(boxes.path)
    temporal_step3 = boxes.data.filter((pl.col("model") == "temporal") & (pl.col("step") == 3))
    assert sorted(temporal_step3["values"][0]) == sorted(
        accuracy.filter((pl.col("stream") == "temporal") & (pl.col("step") == 3))["video_accuracy"])

    d = figures.cohens_d_bars(tables["effects"], tmp_path / "d.png")
    p = figures.wilcoxon_p_bars(tables["effects"], tmp_path / "p.png")
    assert is_print_png(d.path) and is_print_png(p.path)
    by_key = ["model", "step"]
    effects = figures.with_model(tables["effects"]).sort(by_key)
    assert d.data.sort(by_key)["cohens_d"].to_list() == effects["cohens_d"].to_list()
    assert p.data.sort(by_key)["p_wilcoxon"].to_list() == effects["p_wilcoxon"].to_list()
    assert d.data.filter((pl.col("model") == "temporal") & (pl.col("step") == 3))["n"].to_list() == [2]


def with_controls(table: pl.DataFrame, value: str, step: int = 3) -> pl.DataFrame:
    """``table`` (the study's chain) plus issue 27's controls, tested at ``step`` only: finetune_only
    5 above the study's values, random 10 below."""
    tested = table.filter(pl.col("stream").is_in(STREAMS) & (pl.col("step") == step))
    return pl.concat([table] + [tested.with_columns(pl.lit(chain).alias("chain"), pl.col(value) + shift)
                                for chain, shift in (("finetune_only", 5.0), ("random", -10.0))], how="diagonal")


def marks(ax, marker: str) -> list:
    """The drawn lines of one marker shape (legend proxies have no data)."""
    return [line for line in ax.get_lines() if line.get_marker() == marker and len(line.get_xdata())]


def test_accuracy_and_irof_figures_draw_every_chain(experiment, tmp_path):
    """Issue 27: the controls, tested at the explained steps and the last one, are drawn as markers at
    those steps (one shape per chain, beside the study's point), and the legend names each chain."""
    accuracy = with_controls(read_table(experiment / "results", "accuracy"), "video_accuracy")
    dodge = {"finetune_only": -figures.CONTROL_DODGE, "random": figures.CONTROL_DODGE}
    marker = {"finetune_only": "s", "random": "^"}

    per_run = figures.accuracy_per_run(accuracy, "video_accuracy", tmp_path / "per_run.png")
    assert set(per_run.data["chain"]) == {"slimming", "finetune_only", "random"}
    spatial = next(ax for ax in per_run.figure.axes if ax.get_title() == "spatial")
    for chain in ("finetune_only", "random"):
        drawn = marks(spatial, marker[chain])
        assert len(drawn) == len(RUNS)  # one marker per run, at step 3 only
        expected = accuracy.filter((pl.col("chain") == chain) & (pl.col("stream") == "spatial")).sort("run")
        assert [line.get_ydata()[0] for line in drawn] == expected["video_accuracy"].to_list()
        assert all(line.get_xdata()[0] == pytest.approx(12.0 + dodge[chain]) for line in drawn)
    legend = [t.get_text() for t in per_run.figure.legends[0].get_texts()]
    assert legend[:3] == ["run 1", "run 2", "run 3"]
    assert [t.split(" ")[0] for t in legend[3:]] == ["slimming", "finetune_only", "random"]

    summary = stats.all_tables(accuracy, stats.ACCURACY_GROUPS, "video_accuracy")["summary"]
    irof = read_table(experiment / "results", "irof")
    irof_summary = stats.all_tables(stats.irof_per_run(with_controls(irof, "irof")), stats.IROF_GROUPS,
                                    "irof")["summary"]
    for plotted, table in ((figures.mean_sd(summary, "video accuracy (%)", tmp_path / "mean_sd.png"), summary),
                           (figures.trend_with_intervals(irof_summary, "IROF", tmp_path / "trend.png"), irof_summary)):
        ax = plotted.figure.axes[0]
        for chain in ("finetune_only", "random"):
            rows = table.filter((pl.col("chain") == chain) & (pl.col("step") > 0)).sort("stream")
            drawn = marks(ax, marker[chain])
            assert len(drawn) == rows.height == 2  # spatial and temporal, in the models' colours
            assert [line.get_ydata()[0] for line in drawn] == pytest.approx(rows["mean"].to_list())
            assert [to_hex(line.get_color()) for line in drawn] == [c.lower() for c in figures.OKABE_ITO[:2]]
            assert all(line.get_xdata()[0] == pytest.approx(12.0 + dodge[chain]) for line in drawn)
            # the control's step 0 is the study's unpruned model: drawn once, by the study's line
            assert plotted.data.filter((pl.col("chain") == chain) & (pl.col("step") == 0)).is_empty()
        legend = [t.get_text() for t in plotted.figure.legends[0].get_texts()]
        assert [t.split(" ")[0] for t in legend[-3:]] == ["slimming", "finetune_only", "random"]


def test_saliency_change_figure_draws_every_chain(tmp_path):
    """Issue 27: each control's saliency change at the step it was explained at, a marker in its
    stream's colour beside the study's line."""
    rows = [dict(stream=stream, chain=chain, run=run, step=step, prune_ratio=0.04 * step, method="m",
                 clip=clip, spearman=value - 0.1 * step, iou_top=value - 0.2 * step)
            for stream, value in (("spatial", 0.9), ("temporal", 0.8)) for run in RUNS for clip in range(3)
            for chain, steps in (("slimming", (1, 2, 3)), ("finetune_only", (3,)), ("random", (3,)))
            for step in steps]
    plotted = figures.saliency_change_trend(pl.DataFrame(rows), tmp_path / "change.png")
    data = plotted.data
    assert data["chain"].to_list()[:5] == ["slimming"] * 3 + ["finetune_only", "random"]
    rho = plotted.figure.axes[0]
    for chain, marker in (("finetune_only", "s"), ("random", "^")):
        drawn = marks(rho, marker)
        assert [line.get_ydata()[0] for line in drawn] == pytest.approx([0.6, 0.5])  # spatial, temporal
        assert [to_hex(line.get_color()) for line in drawn] == [c.lower() for c in figures.OKABE_ITO[:2]]
    legend = [t.get_text() for t in plotted.figure.legends[0].get_texts()]
    assert legend == ["spatial (m)", "temporal (m)", "slimming (study)", "finetune_only (control)", "random (control)"]


def test_efficiency_figure_with_and_without_latency(experiment, tmp_path):
    accuracy = read_table(experiment / "results", "accuracy")
    plotted = figures.efficiency(accuracy, tmp_path / "efficiency.png")
    assert is_print_png(plotted.path)
    spatial = plotted.data.filter(pl.col("stream") == "spatial")
    assert spatial["params_removed"].to_list() == pytest.approx([0.07 * s for s in STEPS])
    assert spatial["latency_ms"].to_list() == pytest.approx([10.0 - s for s in STEPS])
    without = figures.efficiency(accuracy.with_columns(pl.lit(None, pl.Float64).alias("latency_ms")),
                                 tmp_path / "no_latency.png")
    assert without.data["latency_ms"].null_count() == without.data.height and without.path.is_file()


def test_irof_and_training_figures(experiment, tmp_path):
    irof = read_table(experiment / "results", "irof")
    tables = stats.all_tables(stats.irof_per_run(irof), stats.IROF_GROUPS, "irof")
    boxes = figures.boxplots(irof, "irof", "IROF", tmp_path / "irof_box.png")
    assert is_print_png(boxes.path)
    assert boxes.data["values"].list.len().to_list() == [6] * 4 + [6, 6, 6, 4]  # 2 videos × runs
    trend = figures.trend_with_intervals(tables["summary"], "IROF (per-run mean)", tmp_path / "trend.png")
    assert is_print_png(trend.path)
    summary = tables["summary"].sort("stream", "step")
    assert trend.data["ci_low"].to_list() == summary["ci_low"].to_list()
    assert trend.data["mean"].to_list() == summary["mean"].to_list()

    epochs = read_table(experiment / "results", "epochs")
    curves = figures.training_curves(epochs, tmp_path / "curves.png")
    assert is_print_png(curves.path)
    assert curves.data.height == epochs.height
    assert curves.data.filter(pl.col("phase") == "val")["accuracy"].to_list() == [20.0, 40.0, 60.0] * 4


def test_fusion_table_cells_come_from_the_summary(experiment):
    accuracy = read_table(experiment / "results", "accuracy")
    summary = stats.summary(accuracy, stats.ACCURACY_GROUPS, "video_accuracy")
    table = figures.fusion_table(summary)
    assert table.columns == ["prunable channels removed", "spatial", "temporal", "fusion: mean", "fusion: svm_softmax"]  # study order
    assert table["prunable channels removed"].to_list() == ["0.0 %", "4.0 %", "8.0 %", "12.0 %"]
    row = summary.filter((pl.col("fusion") == "mean") & (pl.col("step") == 2)).row(0, named=True)
    assert table["fusion: mean"][2] == f"{row['mean']:.2f} ± {row['std']:.2f} (n=3)"
    assert table["temporal"][3].endswith("(n=2)")


def test_overlay_rows_per_ratio_with_normalised_maps(experiment, tmp_path):
    plotted = figures.overlay(experiment / "saliency", FIGURE_VIDEO, tmp_path / "overlay.png")
    assert is_print_png(plotted.path)
    assert [r["step"] for r in plotted.data] == list(STEPS)
    assert [r["prune_ratio"] for r in plotted.data] == pytest.approx([0.04 * s for s in STEPS])
    saved = np.load(experiment / "saliency" / "temporal" / "run1" / "step2" / f"{FIGURE_VIDEO}__000.npz")
    np.testing.assert_allclose(plotted.data[2]["temporal"], saved["saliency"] / saved["saliency"].max())
    assert all(r[s].max() == pytest.approx(1.0) for r in plotted.data for s in STREAMS)
    with pytest.raises(FileNotFoundError, match="v_Missing"):
        figures.overlay(experiment / "saliency", "v_Missing", tmp_path / "none.png")


def test_saved_maps_are_found_by_their_partition_and_controls_left_out(experiment, tmp_path):
    maps = figures.saliency_files(experiment / "saliency", FIGURE_VIDEO)
    assert maps.height == len(STREAMS) * len(STEPS) and set(maps["run"]) == {1} and set(maps["clip"]) == {0}
    control = tmp_path / "saliency"
    shutil.copytree(experiment / "saliency", control)
    extra = control / "random" / "spatial" / "run1" / "step3" / f"{FIGURE_VIDEO}__000.npz"
    extra.parent.mkdir(parents=True)
    shutil.copy(next((control / "spatial" / "run1" / "step3").glob("*.npz")), extra)
    assert figures.saliency_files(control, FIGURE_VIDEO).drop("path").equals(maps.drop("path"))
