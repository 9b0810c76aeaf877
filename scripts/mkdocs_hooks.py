"""MkDocs hooks (mkdocs.yml `hooks:`): the site's generated parts, so no fact is kept twice.

- the home page is README.md and the changelog CHANGELOG.md, their links rewritten for the site
  (`docs/x.md` -> `x.md`; a file outside the docs, such as `LICENSE`, becomes its name in code);
- `<!-- config-reference -->` in a page becomes the configuration reference read from the
  config schema (`pipeline.config_reference`);
- `<!-- cli-list -->` ... `<!-- cli-list end -->` becomes the table of entry points
  (`core.commands`, the list tests/test_cli.py checks);
- a page under docs/ that mkdocs.yml's nav does not name is appended to the nav.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GENERATED = {"index.md": "README.md", "changelog.md": "CHANGELOG.md"}
LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")
CLI_BLOCK = re.compile(r"<!-- cli-list -->.*?<!-- cli-list end -->", re.DOTALL)
CONFIG_MARK = "<!-- config-reference -->"


def site_links(markdown: str) -> str:
    """Links of a repository-root Markdown file, rewritten for a page at the site's root."""
    def rewrite(match: re.Match) -> str:
        bang, text, target = match.groups()
        if re.match(r"^[a-z]+:|^#", target):
            return match.group(0)
        path, _, anchor = target.partition("#")
        if path.startswith("docs/"):
            return f"{bang}[{text}]({path[len('docs/'):]}{'#' + anchor if anchor else ''})"
        for page, source in GENERATED.items():
            if path == source:
                return f"{bang}[{text}]({page}{'#' + anchor if anchor else ''})"
        return f"{text} (`{path}`)"  # a file the site does not carry
    return LINK.sub(rewrite, markdown)


def on_config(config):
    named = set()

    def collect(items):
        for item in items:
            value = list(item.values())[0] if isinstance(item, dict) else item
            if isinstance(value, list):
                collect(value)
            else:
                named.add(value)
    collect(config["nav"] or [])
    docs = Path(config["docs_dir"])
    extra = sorted(p.name for p in docs.glob("*.md") if p.name not in named)
    config["nav"] = list(config["nav"] or []) + extra
    return config


def on_files(files, config):
    for page, source in GENERATED.items():
        if files.get_file_from_path(page) is not None:
            files.remove(files.get_file_from_path(page))
        files.append(File.generated(config, page, content=site_links((ROOT / source).read_text())))
    return files


def on_page_markdown(markdown, page, config, files):
    if CONFIG_MARK in markdown:
        from pipeline.config_reference import markdown as config_reference
        markdown = markdown.replace(CONFIG_MARK, config_reference())
    if "<!-- cli-list -->" in markdown:
        from core.commands import markdown as cli_list
        markdown = CLI_BLOCK.sub(lambda _: cli_list(), markdown)
    return markdown
