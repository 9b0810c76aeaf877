"""The documentation: the site builds strictly (no broken link, anchor or missing page), its
generated parts come from the code, and the README stays short and opens with the two commands."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.commands import entry_points
from pipeline.config_reference import keys

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("mkdocs", reason="the docs extra (pip install -e '.[docs]')")
pytest.importorskip("material", reason="the docs extra (pip install -e '.[docs]')")


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(config), "--site-dir", str(site)],
                          capture_output=True, text=True, env=env, timeout=300)


def test_site_builds_strictly_with_generated_pages(tmp_path):
    result = build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stderr[-3000:]
    site = tmp_path / "site"
    config_page = (site / "configuration" / "index.html").read_text()
    for key in keys():  # every key of the schema, none typed by hand
        assert f"<code>{key.key}</code>" in config_page, key.key
    cli_page = (site / "getting-started" / "index.html").read_text()
    for entry in entry_points():
        assert f"<code>{entry.command}</code>" in cli_page, entry.command
    home = (site / "index.html").read_text()
    assert "bash scripts/demo.sh" in home and 'href="ucf101/"' in home  # README, links rewritten
    assert "Unreleased" in (site / "changelog" / "index.html").read_text()


def test_a_broken_link_fails_the_build(tmp_path):
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs)
    page = docs / "gpus.md"
    page.write_text(page.read_text() + "\nSee [the old page](no-such-page.md).\n")
    config = (ROOT / "mkdocs.yml").read_text()
    config = config.replace("docs_dir: docs", f"docs_dir: {docs}")
    config = config.replace("scripts/mkdocs_hooks.py", str(ROOT / "scripts" / "mkdocs_hooks.py"))
    (tmp_path / "mkdocs.yml").write_text(config)
    result = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0
    assert "no-such-page.md" in result.stderr


def test_every_config_key_has_a_type_a_default_and_a_meaning():
    found = keys()
    assert {"data.videos", "train.lr", "prune.round_to", "ray.gpus_per_trial", "stages"} <= {k.key for k in found}
    missing = [k.key for k in found if not k.meaning]
    assert not missing, f"add a one-line comment to these fields in core/config.py: {missing}"
    lr = next(k for k in found if k.key == "train.lr")
    assert (lr.type, lr.allowed) == ("float", "> 0")  # the schema's range (PositiveFloat)
    arch = next(k for k in found if k.key == "model.arch")
    assert arch.default == "resnet18" and "`resnet101`" in arch.allowed


def test_readme_is_short_and_opens_with_the_demo_and_the_tests():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    commands = re.findall(r"```bash\n(.*?)\n```", text, re.DOTALL)
    assert commands[:2] == ["bash scripts/demo.sh", "bash scripts/setup.sh && .venv/bin/python -m pytest"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci  # CI runs exactly the README's test command


def test_every_test_the_docs_name_exists():
    """A test or test file named in the README or a docs page exists (a renamed test is a stale
    reference: the fact the docs cite it for is then unchecked)."""
    tests = {p.name: p.read_text() for p in (ROOT / "tests").glob("test_*.py")}
    every_def = set(re.findall(r"^def (test_\w+)", "\n".join(tests.values()), re.MULTILINE))
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    stale = []
    for page in pages:
        text = page.read_text()
        for file, name in re.findall(r"(test_\w+\.py)(?:::(test_\w+))?", text):
            if file not in tests:
                stale.append(f"{page.name}: {file}")
            elif name and not re.search(rf"^def {name}\b", tests[file], re.MULTILINE):
                stale.append(f"{page.name}: {file}::{name}")
        for name in re.findall(r"`::(test_\w+)", text):  # a second test of the file named before it
            if name not in every_def:
                stale.append(f"{page.name}: ::{name}")
    assert not stale, stale
