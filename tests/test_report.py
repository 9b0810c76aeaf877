"""The report: every table and figure is there, embedded, and shows the data of the tables."""
from __future__ import annotations

import base64
import re
import shutil

import polars as pl
import pytest

from analysis import report as report_module
from analysis import stats
from analysis.report import build_report, run_report_stage
from test_figures import FIGURE_VIDEO, build_experiment

FULL_FIGURES = {"accuracy_per_run", "accuracy_mean_sd", "accuracy_boxplots", "accuracy_cohens_d",
                "accuracy_wilcoxon_p", "efficiency", "gamma_distribution", "training_curves", "irof_boxplots",
                "irof_trend",
                f"overlay_{FIGURE_VIDEO}"}
STAT_TABLES = {f"{prefix}_{kind}" for prefix in ("video_accuracy", "irof") for kind in stats.TABLES}


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    root = build_experiment(tmp_path_factory.mktemp("full"))
    return root, build_report(root)


def test_every_figure_is_written_embedded_and_linked(full):
    root, report = full
    assert set(report.figures) == FULL_FIGURES and report.not_run == []
    page = report.index.read_text()
    markdown = report.markdown.read_text()
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(embedded) == len(FULL_FIGURES)
    for name, plotted in report.figures.items():
        assert plotted.path == root / "report" / "figures" / f"{name}.png"
        assert base64.b64encode(plotted.path.read_bytes()).decode() in embedded
        assert f"](figures/{name}.png)" in markdown


def test_every_statistics_table_is_written_and_shown(full):
    root, report = full
    assert STAT_TABLES | {"fusion_table"} <= set(report.tables)
    page, markdown = report.index.read_text(), report.markdown.read_text()
    for name in STAT_TABLES:
        written = pl.read_parquet(root / "report" / "tables" / f"{name}.parquet")
        assert written.equals(report.tables[name])
        assert (root / "report" / "tables" / f"{name}.csv").is_file()
        assert f"tables/{name}.csv" in page and f"tables/{name}.csv" in markdown
    summary = report.tables["video_accuracy_summary"]
    for value in summary["mean"]:
        cell = report_module._format(value)
        assert f"<td>{cell}</td>" in page and f"| {cell} |" in markdown
    fusion = report.tables["fusion_table"]
    assert fusion.columns[1:] == ["spatial", "temporal", "fusion: mean", "fusion: svm_softmax"]  # study order
    for cell in fusion.row(0)[1:]:
        assert cell in page and cell in markdown


def test_figures_show_the_numbers_of_the_tables(full):
    root, report = full
    tables = {name: pl.read_parquet(root / "report" / "tables" / f"{name}.parquet") for name in STAT_TABLES}
    mean_sd = report.figures["accuracy_mean_sd"].data.sort("model", "step")
    summary = report_module.figures.with_model(tables["video_accuracy_summary"]).sort("model", "step")
    assert mean_sd["mean"].to_list() == summary["mean"].to_list()
    assert mean_sd["std"].to_list() == summary["std"].to_list()
    d = report.figures["accuracy_cohens_d"].data.sort("model", "step")
    effects = report_module.figures.with_model(tables["video_accuracy_effects"]).sort("model", "step")
    assert d["cohens_d"].to_list() == effects["cohens_d"].to_list()
    p = report.figures["accuracy_wilcoxon_p"].data.sort("model", "step")
    assert p["p_wilcoxon"].to_list() == effects["p_wilcoxon"].to_list()
    trend = report.figures["irof_trend"].data
    assert trend["mean"].to_list() == tables["irof_summary"].sort("stream", "step")["mean"].to_list()
    assert trend["ci_high"].to_list() == tables["irof_summary"].sort("stream", "step")["ci_high"].to_list()


def test_config_and_code_version_are_reported(full):
    _, report = full
    for text in (report.index.read_text(), report.markdown.read_text()):
        assert "0123abc" in text and "figure_videos" in text and "Experiment demo" in text


def test_parts_not_run_yet_say_so(tmp_path, capsys):
    report_module.main(["--experiment", str(tmp_path)])
    out = capsys.readouterr().out
    assert "index.html" in out and "not run yet: accuracy" in out
    page = (tmp_path / "report" / "index.html").read_text()
    markdown = (tmp_path / "report" / "report.md").read_text()
    for text in (page, markdown):
        assert text.count("Not available yet") == 8 and "experiment.json not found" in text
        assert "base64" not in text
    with pytest.raises(SystemExit):
        report_module.main(["--experiment", str(tmp_path / "missing")])


def test_sweep_stage_on_a_partial_experiment(tmp_path):
    from training.config import ExperimentConfig

    root = build_experiment(tmp_path / "partial", latency=False, epochs=False, irof=False, maps=False,
                            gammas=False)
    shutil.rmtree(root / "results" / "accuracy" / "fusion")
    cfg = ExperimentConfig.from_dict({"experiment": {"name": "partial", "root": str(root)}})
    report = run_report_stage(cfg, ctx=None)
    assert report.index == root / "report" / "index.html"
    assert report.not_run == ["fusion", "slimming", "training curves", "IROF", "saliency"]
    assert set(report.figures) == {"accuracy_per_run", "accuracy_mean_sd", "accuracy_boxplots",
                                   "accuracy_cohens_d", "accuracy_wilcoxon_p", "efficiency"}
    markdown = report.markdown.read_text()
    assert "Latency was not measured" in markdown
    assert f"saliency maps under {root / 'saliency'}" in markdown


def test_a_cell_over_fewer_runs_is_flagged_and_said(full):
    """#31: temporal step 3 lacks run 3 (test_figures.build_experiment): flagged, not averaged silently."""
    root, report = full
    markdown = report.markdown.read_text()
    assert "| runs | fewer_runs |" in markdown and "| temporal | 3 |" in markdown
    assert ("1 row(s) of this table average over fewer runs than the others (fewer_runs; runs \\[2\\] of 3)"
            in markdown)
