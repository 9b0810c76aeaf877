"""scripts/docs_tables.py: the README's and the docs' result tables come from a run's results store
(real Parquet written through core.results), name the run's commit and machine, and leave the
text around their markers as it was."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from analysis import stats
from core.results import write_rows

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "docs_tables.py"
# video accuracy (%) of runs 1, 2 at steps 0 and 1
VALUES = {("spatial", None): {0: [40.0, 42.0], 1: [38.0, 39.0]},
          ("temporal", None): {0: [50.0, 54.0], 1: [47.0, 49.0]},
          ("fusion", "svm_softmax"): {0: [90.0, 96.0], 1: [85.0, 87.0]}}


def experiment(root: Path) -> Path:
    for (stream, fusion), steps in VALUES.items():
        rows = [dict(experiment="demo", stream=stream, fusion=fusion, run=run, seed=run, step=step,
                     prune_ratio=0.2 * step, channels_removed=0.2 * step, params_removed=0.15 * step,
                     flops_removed=0.25 * step, split=1, clip_accuracy=v - 5, video_accuracy=v,
                     video_top5=99.0, loss=1.0, n_videos=144, checkpoint=None,
                     finished_at=datetime(2026, 12, 6, tzinfo=timezone.utc))
                for step, vs in steps.items() for run, v in enumerate(vs, start=1)]
        write_rows(root / "results", "accuracy", rows, partition=f"{stream}_{fusion}")
    for stream, base in (("spatial", 10.0), ("temporal", 20.0)):  # IROF of 3 clips: median = the middle one
        rows = [dict(experiment="demo", stream=stream, run=run, step=step, prune_ratio=0.2 * step,
                     video=f"v{i}", clip=0, label=i, target=i, predicted=i, method="vanilla_gradient",
                     irof=base + run + step + i, n_segments=40, seconds=0.1)
                for run in (1, 2) for step in (0, 1) for i in (0, 1, 2)]
        write_rows(root / "results", "irof", rows, partition=stream)
    (root / "experiment.json").write_text(json.dumps({
        "git_commit": "0123456789abcdef", "started_at": "2026-12-06T01:02:03+00:00",
        "versions": {"crossroads": "0.2.0.dev0"},
        "device": {"cpu_model": "Test CPU 9000", "cpus": 2, "gpus": []}}))
    return root


def load_script():
    spec = importlib.util.spec_from_file_location("docs_tables", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DOCS_TABLES = load_script()


def run(*args) -> SimpleNamespace:
    """The script's main in this process (its imports are the slow part), stdout/stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = DOCS_TABLES.main([str(a) for a in args])
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


@pytest.mark.slow  # a report's figures and tables from a small store
def test_blocks_are_filled_from_the_store_and_the_rest_is_kept(tmp_path):
    root = experiment(tmp_path / "demo")
    page = tmp_path / "page.md"
    before, between, after = "# Title\n\nText before.\n\n", "\nText between.\n\n", "\nText after.\n"
    page.write_text(before + "<!-- docs-tables:demo begin -->\nold numbers\n<!-- docs-tables:demo end -->"
                    + between + "<!-- docs-tables:demo-summary begin -->\n<!-- docs-tables:demo-summary end -->"
                    + "<!-- docs-tables:demo-findings begin -->\n<!-- docs-tables:demo-findings end -->" + after)
    docs = tmp_path / "docs"  # the docs' figure of the experiment is replaced by the report's
    docs.mkdir()
    (docs / "demo_gamma.png").write_bytes(b"old figure")
    (root / "report" / "figures").mkdir(parents=True)
    (root / "report" / "figures" / "gamma_distribution.png").write_bytes(b"the report's figure")
    assert run("--experiment", root, "--files", page, "--docs", docs, "--check").returncode == 1  # stale
    assert (docs / "demo_gamma.png").read_bytes() == b"old figure"  # --check changes nothing
    result = run("--experiment", root, "--files", page, "--docs", docs)
    assert result.returncode == 0, result.stderr
    text = page.read_text()
    assert text.startswith(before) and between in text and text.endswith(after)
    assert "old numbers" not in text
    assert "Commit `0123456789ab`" in text and "crossroads 0.2.0.dev0" in text and "Test CPU 9000" in text
    compact = text.split("<!-- docs-tables:demo begin -->")[1].split("<!-- docs-tables:demo end -->")[0]
    assert "Video accuracy (%) on 144 test videos, mean ± sd over 2 runs" in compact
    assert "| model | unpruned | 20.0 % |" in compact
    assert "| spatial | 41.0 ± 1.4 | 38.5 ± 0.7 |" in compact  # mean ± sd (ddof 1) of the rows above
    assert "| temporal | 52.0 ± 2.8 | 48.0 ± 1.4 |" in compact
    assert "| fusion: svm_softmax | 93.0 ± 4.2 | 86.0 ± 1.4 |" in compact
    assert compact.index("| spatial") < compact.index("| temporal") < compact.index("| fusion")  # study order
    summary = text.split("<!-- docs-tables:demo-summary begin -->")[1]
    assert "video accuracy (%), mean ± sd" in summary and "p against step 0" in summary
    # per-run medians 12, 13 (spatial, step 0) -> 12.50 ± 0.71; temporal step 1: 23, 24
    assert "| spatial | slimming | 0 |" in summary and "12.50 ± 0.71" in summary and "23.50 ± 0.71" in summary
    # the findings paragraph: the report's generated sentences, one per model and chain
    found = text.split("<!-- docs-tables:demo-findings begin -->")[1].split("<!-- docs-tables:demo-findings end -->")[0]
    sentences = [line for line in found.splitlines() if line.startswith("- ")]
    assert sentences and sentences[0].startswith("- spatial, slimming (primary endpoint): accuracy")
    assert all("not a finding" in line for line in sentences)  # 2 runs: every row flagged n < 3
    assert (docs / "demo_gamma.png").read_bytes() == b"the report's figure"
    assert run("--experiment", root, "--files", page, "--docs", docs, "--check").returncode == 0  # now current
    # the test the caption names is a table the statistics really have (it once named "explain_stats")
    named = re.search(r"statistics table (\w+)\)", summary)
    assert named and named.group(1) in stats.compute_tables(root / "results", "video_accuracy")


def test_no_block_or_no_store_exits_2_naming_it(tmp_path):
    root = experiment(tmp_path / "demo")
    page = tmp_path / "page.md"
    page.write_text("no markers here\n")
    result = run("--experiment", root, "--files", page, "--docs", tmp_path)
    assert result.returncode == 2 and "docs-tables:demo begin" in result.stderr
    result = run("--experiment", tmp_path / "nothing", "--files", page)
    assert result.returncode == 2 and "no results store" in result.stderr


def test_the_shipped_pages_hold_the_demo_blocks():
    readme = (ROOT / "README.md").read_text()
    results = (ROOT / "docs" / "results.md").read_text()
    assert "<!-- docs-tables:demo begin -->" in readme and "<!-- docs-tables:demo end -->" in readme
    assert "<!-- docs-tables:demo-summary begin -->" in results
    assert "<!-- docs-tables:demo-findings begin -->" in results


def test_a_run_of_uncommitted_code_says_so(tmp_path):
    (tmp_path / "experiment.json").write_text(json.dumps({
        "git_commit": "0123456789abcdef0123-dirty", "versions": {}, "device": {"gpus": ["NVIDIA H100"]}}))
    line = DOCS_TABLES.provenance_line(tmp_path, "cmd")
    assert "Commit `0123456789ab-dirty`" in line and "NVIDIA H100" in line
