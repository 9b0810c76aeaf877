"""The report at the paper's size (synthetic tables, no training) and with hostile names."""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from analysis import figures
from analysis.report import build_report
from analysis.summary import STUDY_ORDER
from tests.report_experiments import EXPLAINED, PAPER_STEPS, paper_size_experiment

HOSTILE = '<script>alert(1)</script> "quoted" & <img src=x onerror=alert(2)>'


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    root = paper_size_experiment(tmp_path_factory.mktemp("paper"), controls=True)
    return root, build_report(root)


@pytest.mark.slow  # the paper-size report (module fixture)
def test_paper_size_figures_fit_and_every_link_resolves(paper):
    root, report = paper
    assert report.figures
    for plotted in report.figures.values():
        with Image.open(plotted.path) as image:
            assert image.width <= figures.MAX_WIDTH_PX, (plotted.path, image.size)
            assert image.height <= figures.MAX_WIDTH_PX, (plotted.path, image.size)
    page = report.index.read_text()
    assert page.count('src="data:image/png;base64,') == len(report.figures)  # every figure embedded
    markdown = report.markdown.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert len(links) == len(report.figures)
    assert all((root / "report" / link).is_file() for link in links)
    assert not list((root / "report").rglob("*.tmp-*"))
    # 18 steps give 153 post-hoc pairs per model: significant ones shown, all behind <details>
    assert re.search(r"<details><summary>all \d{3,} pairs</summary>", markdown)  # atomic writes leave no temporaries


@pytest.mark.slow  # the paper-size report (module fixture)
def test_summary_table_comes_first_in_study_order(paper):
    root, report = paper
    markdown = report.markdown.read_text()
    headings = re.findall(r"^## (.+)$", markdown, flags=re.M)
    assert headings[0].startswith("Experiment ") and headings[1:3] == ["Findings", "Summary"]
    assert markdown.index("## Summary") < markdown.index("![")  # before every figure
    table = report.tables["summary"]
    assert table.columns[:7] == ["model", "chain", "step", "channels_removed_%", "params_removed_%",
                                 "flops_removed_%", "runs"]
    models = table["model"].unique(maintain_order=True).to_list()
    assert models == list(STUDY_ORDER[:5]) == ["spatial", "temporal", "fusion: mean", "fusion: svm_softmax",
                                               "fusion: svm_features"]
    assert table["step"].unique().sort().to_list() == list(EXPLAINED)
    assert set(table["runs"].to_list()) == {5}
    pruned = table.filter(table["step"] > 0)
    assert pruned["video_accuracy_p_vs_step0"].null_count() == 0  # paired t over 5 runs
    singles = pruned.filter(pruned["model"].is_in(["spatial", "temporal"]))
    assert singles["irof_p_vs_step0"].null_count() == 0
    assert (table.filter(table["model"].str.starts_with("fusion"))["irof_mean_sd"] == "–").all()


STUDY_MODELS = ["spatial", "temporal", "fusion: mean", "fusion: svm_softmax", "fusion: svm_features"]
PERCENT = re.compile(r"^[-\u2212]?\d+(\.\d)?$")  # percent pruned: at most 0.1


def drawn(plotted):
    """The figure of a Plotted, laid out and drawn, with its renderer."""
    renderer = FigureCanvasAgg(plotted.figure).get_renderer()
    plotted.figure.draw(renderer)
    return plotted.figure, renderer


@pytest.mark.slow  # the paper-size report (module fixture)
def test_the_study_is_set_against_its_controls_at_every_shared_step(paper):
    root, report = paper
    for prefix in ("video_accuracy", "irof"):
        table = report.tables[f"{prefix}_vs_control"]
        assert set(table["stream"]) == {"spatial", "temporal"}  # the streams' chains have controls
        assert table.group_by("stream", "control").agg(pl.col("step").sort()).sort("stream", "control").rows() == [
            (stream, control, sorted(set(EXPLAINED) - {0}))
            for stream in ("spatial", "temporal") for control in ("finetune_only", "random")], prefix
        assert (root / "report" / "tables" / f"{prefix}_vs_control.csv").is_file()
    # random's accuracy is the study's minus 5 x the pruning ratio in every run: a difference, no spread
    random = report.tables["video_accuracy_vs_control"].filter(pl.col("control") == "random")
    assert random["diff_vs_control"].to_list() == pytest.approx((5 * random["prune_ratio"]).to_list())
    markdown = report.markdown.read_text()
    assert markdown.index("## Equivalence with the unpruned models") < markdown.index("## Against the controls")
    assert "slimming − control at step" in report.tables["findings"]["sentence"][0]


@pytest.mark.slow  # the paper-size report (module fixture)
def test_paper_size_figures_are_legible(paper):
    """Legends outside the data, percent ticks to 0.1, facets and legends in study order."""
    _, report = paper
    legends, figs = 0, {}
    for name, plotted in report.figures.items():
        fig, renderer = figs[name] = drawn(plotted)
        panels = [ax for ax in fig.axes if ax.get_visible()]
        for legend in [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]:
            legends += 1
            box = legend.get_window_extent(renderer)
            assert not any(box.overlaps(ax.get_window_extent(renderer)) for ax in panels), name
        for ax in panels:
            if "pruned" in ax.get_xlabel():
                labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
                assert labels and all(PERCENT.match(t) for t in labels), (name, labels)
    assert legends >= 4  # per run, mean ± sd, trend, efficiency, training curves
    for name in ("accuracy_boxplots", "accuracy_cohens_d", "accuracy_wilcoxon_p"):
        fig, _ = figs[name]
        assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == STUDY_MODELS, name
    bars = figs["accuracy_cohens_d"][0].axes[0]
    assert [t.get_text() for t in bars.get_xticklabels()] == [f"{(1 - 0.96 ** k) * 100:.1f}" for k in PAPER_STEPS[1:]]
    assert bars.get_xticklabels()[-1].get_text() == "50.0"  # 17 steps of 4 %: 50.04 % pruned
    fig, _ = figs["accuracy_mean_sd"]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:5] == STUDY_MODELS  # then the chains (issue 27): the study's line, each control's marker
    assert [t.split(" ")[0] for t in legend[5:]] == ["slimming", "finetune_only", "random"]
    assert report.figures["accuracy_boxplots"].data["model"].unique(maintain_order=True).to_list() == STUDY_MODELS


@pytest.mark.slow  # the paper-size report (module fixture)
def test_accuracy_and_irof_figures_draw_the_control_chains(paper):
    """Issue 27: the report's accuracy and IROF figures against the pruned fraction show every chain."""
    _, report = paper
    for name in ("accuracy_per_run", "accuracy_mean_sd", "irof_trend"):
        data = report.figures[name].data
        assert set(data["chain"]) == {"slimming", "finetune_only", "random"}, name
        assert set(data.filter(pl.col("chain") != "slimming")["step"]) == set(EXPLAINED) - {0}, name
        legend = [t.get_text() for t in report.figures[name].figure.legends[0].get_texts()]
        assert legend[-2:] == ["finetune_only (control)", "random (control)"], name
    page = report.index.read_text()
    assert len(re.findall(r"<figcaption>[^<]*the control chains \(prune\.chains\)", page)) == 3  # the captions say so


@pytest.mark.slow  # the paper-size report (module fixture)
def test_efficiency_panel_draws_latency_and_throughput(paper):
    _, report = paper
    fig, _ = drawn(report.figures["efficiency"])
    sizes, latency, throughput = fig.axes
    assert latency.get_title() == "latency (cpu)" and throughput.get_title() == "throughput (cpu)"
    for ax in (latency, throughput):
        assert len(ax.lines) == 2 and all(len(line.get_xdata()) == len(PAPER_STEPS) for line in ax.lines)
        assert not ax.texts  # no "not measured"
    data = report.figures["efficiency"].data.filter(pl.col("stream") == "spatial").sort("step")
    assert data["throughput_cps"][0] == pytest.approx(400.0) and data["latency_ms"][0] == pytest.approx(5.0)


def test_hostile_names_are_escaped_in_html_and_markdown(tmp_path):
    root = paper_size_experiment(tmp_path / "hostile", name="h", steps=(0, 1), explained=(0, 1))
    (root / "experiment.json").write_text(json.dumps(
        {"git_commit": HOSTILE, "config": {"experiment": {"name": HOSTILE}}}))
    report = build_report(root, figure_videos=[f"v_{HOSTILE}_g01_c01"])
    page, markdown = report.index.read_text(), report.markdown.read_text()
    for text in (page, markdown):
        assert "<script>" not in text and "<img src=x" not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
        assert "onerror=alert(2)" in text  # shown as text, escaped above
    assert "&#34;quoted&#34; &amp;" in page  # Jinja2's autoescape (markupsafe) spells &quot; as &#34;


def markdown_columns(line: str) -> int:
    """Cells of a Markdown table row: split at the pipes no backslash escapes."""
    return len(re.split(r"(?<!\\)\|", line.strip().strip("|")))


def test_markdown_table_keeps_its_columns():
    """Why report.md keeps its own tables: a ``|`` or ``<`` in a name stays inside its cell; tabulate's
    pipe table (if installed) would split the row and pass the HTML through."""
    from analysis.render import _markdown_table

    table = pl.DataFrame({"model": ["a|b", HOSTILE], "mean": [1.0, 2.0]})
    lines = _markdown_table(table).splitlines()
    assert [markdown_columns(line) for line in lines] == [2] * 4
    assert "<script>" not in "\n".join(lines) and "a\\|b" in lines[2]
    tabulate = pytest.importorskip("tabulate")
    theirs = tabulate.tabulate(table.rows(), headers=table.columns, tablefmt="pipe").splitlines()
    assert markdown_columns(theirs[2]) == 3 and "<script>" in theirs[3]


CHROMIUM = shutil.which("chromium")
WINDOW = (1280, 900)  # a laptop browser window
CHECK_SCRIPT = """<script>window.addEventListener('load', () => {
  const images = [...document.images];
  document.body.setAttribute('data-check', JSON.stringify({
    images: images.length,
    loaded: images.filter(i => i.complete && i.naturalWidth > 0).length,
    scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
    scrollHeight: document.documentElement.scrollHeight,
    headings: [...document.querySelectorAll('h2')].map(h => h.textContent),
    findings: document.querySelectorAll('ul.findings li').length,
    findingsTop: document.querySelector('ul.findings').getBoundingClientRect().top,
    firstFigureTop: document.querySelector('figure').getBoundingClientRect().top,
    overflowing: [...document.querySelectorAll('body *')]
      .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1).map(e => e.tagName)}));
});</script>"""


def chromium(tmp_path: Path, *args: str) -> str:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=20000", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package")
def test_paper_size_report_in_headless_chromium(paper, tmp_path):
    """What a reader sees: every image loads, nothing is wider than the window; a full-page
    screenshot is saved (CROSSROADS_SCREENSHOT=path keeps a copy to look at)."""
    root, report = paper
    checked = tmp_path / "checked.html"  # the page plus a script that reports what loaded
    checked.write_text(report.index.read_text().replace("</body>", CHECK_SCRIPT + "</body>"))
    dom = chromium(tmp_path, f"--window-size={WINDOW[0]},{WINDOW[1]}", "--dump-dom", checked.as_uri())
    found = re.search(r'data-check="([^"]+)"', dom)
    assert found, dom[-500:]
    check = json.loads(html.unescape(found.group(1)))
    assert check["images"] == len(report.figures) and check["loaded"] == check["images"], check
    assert check["scrollWidth"] <= check["innerWidth"] == WINDOW[0] and check["overflowing"] == [], check
    # issue 27: the findings open the page, one item per model and chain, controls included
    assert check["headings"][:5] == ["Experiment paper0", "Findings", "Summary", "Equivalence with the unpruned models",
                                     "Against the controls"]
    assert check["findings"] == report.tables["findings"].height == 5 + 2 * 2, check
    assert check["findingsTop"] < check["firstFigureTop"]

    screenshot = tmp_path / "report.png"
    chromium(tmp_path, f"--window-size={WINDOW[0]},{check['scrollHeight']}", f"--screenshot={screenshot}",
             report.index.as_uri())
    with Image.open(screenshot) as image:
        assert image.size == (WINDOW[0], check["scrollHeight"])
        # not a blank page: the figures' pixels are there
        assert len(image.convert("L").getcolors(256 * 256) or range(257)) > 16
    if os.environ.get("CROSSROADS_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["CROSSROADS_SCREENSHOT"])
