"""The report at the paper's size (synthetic tables, no training) and with hostile names."""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from analysis import figures
from analysis.report import build_report
from analysis.results import write_rows
from analysis.summary import STUDY_ORDER

STEPS, RUNS, EXPLAINED = range(18), range(1, 6), (0, 4, 8, 12)
FUSIONS = ("mean", "svm_softmax", "svm_features")
HOSTILE = '<script>alert(1)</script> "quoted" & <img src=x onerror=alert(2)>'


def paper_size_experiment(root: Path, name: str = "paper", steps=STEPS, explained=EXPLAINED) -> Path:
    """2 streams x 3 fusions x 5 runs x 18 steps of accuracy, IROF at 4 explained steps."""
    rng = np.random.default_rng(0)
    models = [("spatial", None), ("temporal", None)] + [("fusion", f) for f in FUSIONS]
    for stream, fusion in models:
        for run in RUNS:
            rows = []
            for step in steps:
                ratio = 1 - 0.9 ** step
                acc = 80 - 30 * ratio ** 2 + rng.normal(0, 1)
                rows.append(dict(experiment=name, stream=stream, fusion=fusion, run=run, seed=run,
                                 step=step, prune_ratio=ratio, channels_removed=ratio,
                                 params_removed=ratio * 0.9, flops_removed=ratio * 0.8, split=1,
                                 clip_accuracy=acc - 3, video_accuracy=acc, video_top5=acc + 10,
                                 loss=1 + ratio, n_videos=3783, latency_ms=5 - 3 * ratio,
                                 finished_at=datetime.now(timezone.utc)))
            write_rows(root / "results", "accuracy", rows, partition=f"{stream}/{fusion}/run{run}")
    for stream in ("spatial", "temporal"):
        for run in RUNS:
            rows = [dict(experiment=name, stream=stream, run=run, step=step,
                         prune_ratio=1 - 0.9 ** step, video=f"v_{cls}_g01_c01", clip=0, label=0,
                         target=0, predicted=0, method="saliency",
                         irof=float(rng.normal(0.3 - 0.01 * step, 0.02)), n_segments=50, seconds=1.0)
                    for step in explained for cls in ("Archery", "Bowling")]
            write_rows(root / "results", "irof", rows, partition=f"{stream}/run{run}")
    return root


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    root = paper_size_experiment(tmp_path_factory.mktemp("paper"))
    return root, build_report(root)


def test_paper_size_figures_fit_and_every_link_resolves(paper):
    root, report = paper
    assert report.figures
    for plotted in report.figures.values():
        with Image.open(plotted.path) as image:
            assert image.width <= figures.MAX_WIDTH_PX, (plotted.path, image.size)
    markdown = report.markdown.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert len(links) == len(report.figures)
    assert all((root / "report" / link).is_file() for link in links)
    assert not list((root / "report").rglob("*.tmp-*"))
    # 18 steps give 153 post-hoc pairs per model: significant ones shown, all behind <details>
    assert re.search(r"<details><summary>all \d{3,} pairs</summary>", markdown)  # atomic writes leave no temporaries


def test_summary_table_comes_first_in_study_order(paper):
    root, report = paper
    markdown = report.markdown.read_text()
    headings = re.findall(r"^## (.+)$", markdown, flags=re.M)
    assert headings[0].startswith("Experiment ") and headings[1] == "Summary"
    assert markdown.index("## Summary") < markdown.index("![")  # before every figure
    table = report.tables["summary"]
    assert table.columns[:6] == ["model", "step", "channels_removed_%", "params_removed_%", "flops_removed_%",
                                 "runs"]
    models = table["model"].unique(maintain_order=True).to_list()
    assert models == list(STUDY_ORDER)
    assert table["step"].unique().sort().to_list() == list(EXPLAINED)
    assert set(table["runs"].to_list()) == {5}
    pruned = table.filter(table["step"] > 0)
    assert pruned["video_accuracy_p_vs_step0"].null_count() == 0  # paired t over 5 runs
    singles = pruned.filter(pruned["model"].is_in(["spatial", "temporal"]))
    assert singles["irof_p_vs_step0"].null_count() == 0
    assert (table.filter(table["model"].str.starts_with("fusion"))["irof_mean_sd"] == "–").all()


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
    assert "&quot;quoted&quot; &amp;" in page
