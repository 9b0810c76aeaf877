"""The report: every table and figure is there, embedded, and shows the data of the tables."""
from __future__ import annotations

import base64
import html
import re
import shutil

import polars as pl
import pytest

from analysis import report as report_module
from analysis import readable, stats
from analysis.report import build_report, run_report_stage
from tests.report_experiments import FIGURE_VIDEO, build_experiment

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
        cell = readable.cell("mean", value)
        assert re.search(rf"<td[^>]*>{re.escape(cell)}</td>", page) and f"| {cell} |" in markdown
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
        assert text.count("Not available yet") == 10 and "experiment.json not found" in text
        assert "base64" not in text
    with pytest.raises(SystemExit):
        report_module.main(["--experiment", str(tmp_path / "missing")])


def test_sweep_stage_on_a_partial_experiment(tmp_path):
    from core.config import ExperimentConfig

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


def test_report_opens_with_generated_findings(full):
    """Issue #27 point 3: findings in words right after the title, from the tables."""
    root, report = full
    markdown = report.markdown.read_text()
    headings = re.findall(r"^## (.+)$", markdown, flags=re.M)
    assert headings[1:4] == ["Findings", "Summary", "Equivalence with the unpruned models"]
    findings = report.tables["findings"]
    assert findings["model"].to_list()[:2] == ["spatial", "temporal"]
    assert findings["endpoint"].to_list()[0] == "primary" and set(findings["chain"]) == {"slimming"}
    kept = report.tables["video_accuracy_kept"]
    spatial = kept.filter(pl.col("stream") == "spatial").row(0, named=True)
    sentence = findings["sentence"][0]
    assert sentence.startswith("spatial, slimming (primary endpoint): accuracy")
    stopped = report.tables["video_accuracy_equivalence"].filter(
        (pl.col("stream") == "spatial") & (pl.col("step") == spatial["stopped_at_step"])).row(0, named=True)
    # the numbers of the sentence are the table's, rounded
    assert f"TOST p = {readable.p_value(stopped['p_tost'])}" in sentence
    assert readable.rounded(stopped["mde"]) in sentence
    # temporal lost a run at step 3: n = 2 there, said in its sentence
    temporal = findings.filter(pl.col("model") == "temporal").row(0, named=True)
    assert "n < 3" in temporal["note"] and "not a finding" in temporal["sentence"]
    first = markdown.index("## Findings")
    assert markdown.index("- spatial, slimming (primary endpoint)", first) < markdown.index("## Summary")
    assert "Holm's correction (post-hoc tables) covers the steps of one model, chain and metric" in markdown
    assert (root / "report" / "tables" / "findings.csv").is_file()


def test_tables_are_readable_and_also_latex(full):
    root, report = full
    page, markdown = report.index.read_text(), report.markdown.read_text()
    for text in (page, markdown):
        for machine_name in ("video_accuracy_p_vs_step0", "channels_removed_%", "p_wilcoxon_holm", "ci90_low"):
            assert machine_name not in text.replace("tables/", "")
        assert "video accuracy: p vs step 0" in text and "TOST p" in text
    # p-values: three decimals or "< 0.001", never 1e-05 style
    assert not re.search(r"<td[^>]*>\d\.\d+e-\d+</td>", page)
    effects = report.tables["video_accuracy_effects"]
    for p in effects["p_t"].drop_nulls():
        assert re.search(rf"<td[^>]*>{re.escape(html.escape(readable.p_value(p)))}</td>", page)
    # the original study's tables are collapsed behind <details>
    original = page.index("Original study&#39;s analysis: video accuracy: per step")  # Jinja2's autoescape
    assert page.index("<details>", original) < page.index("<table>", original)
    tex = (root / "report" / "tables" / "video_accuracy_equivalence.tex").read_text()
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex and "TOST p" in tex
    assert (root / "report" / "tables" / "findings.tex").is_file()
    for name in report.figures:  # a vector copy of every figure, for papers
        assert (root / "report" / "figures" / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"


def test_few_runs_are_flagged_in_the_effect_size_figure(full):
    _, report = full
    fig = report.figures["accuracy_cohens_d"].figure
    temporal = [ax for ax in fig.axes if ax.get_title() == "temporal"][0]
    assert "n<3" in [t.get_text() for t in temporal.texts]  # run 3 missing at step 3
    assert not any(ax.get_shared_y_axes().get_siblings(ax)[1:] for ax in fig.axes)  # own scale per facet


def test_a_cell_over_fewer_runs_is_flagged_and_said(full):
    """#31: temporal step 3 lacks run 3 (test_figures.build_experiment): flagged, not averaged silently."""
    root, report = full
    markdown = report.markdown.read_text()
    assert "| runs | fewer runs than the others |" in markdown and "| temporal | slimming | 3 |" in markdown
    assert ("1 row(s) of this table average over fewer runs than the others (fewer_runs; runs \\[2\\] of 3)"
            in markdown)
