"""The report shows Network Slimming at work (|γ| histograms per phase, each step's threshold) and
says which fraction every "% pruned" means (prunable channels vs the whole model's params / FLOPs)."""
from __future__ import annotations

import polars as pl
import pytest
import torch
import torchvision
from PIL import Image

from analysis import figure_canvas, figures, figures_accuracy, figures_explain, figures_gamma, pruned, readable
from analysis.report import ReportBuilder, build_report
from core.results import read_table
from pruning.slimming import gamma_histogram
from tests.report_experiments import STEPS, STREAMS, build_experiment


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A report of the small synthetic experiment, with the x label of every axis drawn."""
    root = build_experiment(tmp_path_factory.mktemp("slim"))
    xlabels: dict[str, list[str]] = {}
    save = figure_canvas._save

    def recording_save(fig, path):  # the real writer; only records what the axes say
        xlabels[path.stem] = [ax.get_xlabel() for ax in fig.axes]
        return save(fig, path)

    with pytest.MonkeyPatch.context() as patch:
        for family in (figures_accuracy, figures_explain, figures_gamma):  # each module draws and saves
            patch.setattr(family, "_save", recording_save)
        report = build_report(root)
    return root, report, xlabels


def test_gamma_figure_has_every_phase_and_the_thresholds(tmp_path):
    root = build_experiment(tmp_path / "e", irof=False, maps=False, epochs=False)
    gammas = read_table(root / "results", "gammas")
    accuracy = read_table(root / "results", "accuracy")
    plotted = figures.gamma_distribution(gammas, [1, 3], tmp_path / "g.png", pruned.step_ratios(accuracy))
    with Image.open(plotted.path) as image:
        assert image.width <= figures.MAX_WIDTH_PX
    data = plotted.data
    for stream in STREAMS:
        part = data.filter(pl.col("stream") == stream)
        curves = part.select("phase", "step").unique().sort("step", "phase").rows()
        assert curves == [(p, s) for p, s in [("initial", 0), ("trained", 0), ("finetuned", 1), ("finetuned", 3)]]
        shares = part.group_by("phase", "step").agg(pl.col("share").sum())["share"]
        assert all(abs(s - 100) < 1e-9 for s in shares)  # each curve is a distribution over channels
    step3 = data.filter((pl.col("phase") == "finetuned") & (pl.col("step") == 3))
    assert step3["threshold"].unique().to_list() == [pytest.approx(0.03)]
    assert step3["label"][0] == "step 3, 12.0 % of channels, threshold 0.03"
    # before/after training keep their own labels; counts summed over the 3 runs
    assert set(data.filter(pl.col("step") == 0)["label"]) == {"before training", "trained (step 0)"}
    assert data.filter((pl.col("stream") == "spatial") & (pl.col("phase") == "initial"))["count"].sum() == 600


def test_a_narrow_gamma_distribution_keeps_its_shape(tmp_path):
    """Sparsity training at λ = 1e-4 left the demo's |γ| within 0.88–1.0: the stored bins and the
    figure must resolve that range (60 bins over 1e-8..10 drew it as one bar)."""
    model = torchvision.models.resnet18(num_classes=4)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.copy_(0.88 + 0.12 * torch.rand(module.num_features, generator=generator))
    histogram = gamma_histogram(model, residual=False)
    assert len(histogram) >= 40 and all(row["count"] > 0 for row in histogram)  # fine, non-empty bins only
    rows = [dict(stream="spatial", run=1, step=0, phase="trained", threshold=None, **row) for row in histogram]
    plotted = figures.gamma_distribution(pl.DataFrame(rows), [], tmp_path / "g.png")
    curve = plotted.data
    assert curve["count"].sum() == sum(row["count"] for row in histogram)
    assert 20 <= curve.height <= figures.GAMMA_DISPLAY_BINS  # the range fills the panel, no stored bin split
    assert curve["bin_low"].min() >= 0.87 and curve["bin_high"].max() <= 1.01
    assert curve["share"].max() < 10  # no single bar holds the distribution


@pytest.mark.slow  # builds a whole report (~20 s of CPU)
def test_report_section_shows_gammas_and_thresholds_per_step(built):
    root, report, _ = built
    assert "gamma_distribution" in report.figures and "slimming" not in report.not_run
    thresholds = report.tables["thresholds"]
    assert thresholds.select("stream", "step").rows() == [(s, k) for s in STREAMS for k in STEPS[1:]]
    assert thresholds["threshold_mean"].to_list() == pytest.approx([0.01 * k for _ in STREAMS for k in STEPS[1:]])
    markdown = report.markdown.read_text()
    assert "## Network Slimming: BatchNorm scales and pruning thresholds" in markdown
    assert markdown.index("figures/gamma_distribution.png") < markdown.index(f"| {readable.header('threshold_mean')} |")


def test_report_without_gammas_says_so(tmp_path):
    builder = ReportBuilder(build_experiment(tmp_path / "e", gammas=False, irof=False, maps=False, epochs=False),
                            "video_accuracy", None)
    builder.slimming_section()
    assert builder.report.not_run == ["slimming"] and not builder.report.figures


@pytest.mark.slow  # shares the report built above
def test_every_pruned_fraction_is_named(built):
    root, report, xlabels = built
    # the headline table: channels, params and FLOPs removed, measured, for every model and step
    summary = report.tables["summary"].filter(pl.col("model") == "spatial").sort("step")
    steps = summary["step"].to_list()
    assert summary["channels_removed_%"].to_list() == pytest.approx([4.0 * k for k in steps])
    assert summary["params_removed_%"].to_list() == pytest.approx([7.0 * k for k in steps])
    assert summary["flops_removed_%"].to_list() == pytest.approx([5.0 * k for k in steps])
    # every step of every stream in the accuracy section's fractions table
    fractions = report.tables["pruned_fractions"]
    assert fractions.select("stream", "step").rows() == [(s, k) for s in STREAMS for k in STEPS]
    assert fractions.filter(pl.col("stream") == "temporal")["params_removed_%"].to_list() == \
        pytest.approx([7.0 * k for k in STEPS])
    markdown = report.markdown.read_text()
    assert markdown.count(pruned.DEFINITIONS) >= 2  # headline and accuracy section
    # no axis says "%" of something pruned without naming channels, params or FLOPs
    percent_axes = [(name, label) for name, labels in xlabels.items() for label in labels
                    if "%" in label and ("pruned" in label or "removed" in label)]
    assert percent_axes, xlabels
    for name, label in percent_axes:
        assert "prunable channels" in label, (name, label)
    assert report.tables["fusion_table"].columns[0] == "prunable channels removed"
