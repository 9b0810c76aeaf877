"""Rendering the report's blocks: ``index.html`` from the Jinja2 template
``analysis/templates/report.html.j2`` (autoescape: every data or config string is escaped;
figures embedded, tables through ``analysis.readable``) and ``report.md`` (HTML characters as
entities, and the characters that open links, code or table cells backslashed: ``md_escape``)."""
from __future__ import annotations

import base64
import html
import urllib.parse
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jinja2
import polars as pl
from PIL import Image

from analysis import figures, readable

SHORT_WORD = 16  # words up to this long are never broken inside (finetune_only, svm_features, secondary)
CSS_PX_PER_INCH = 96  # figures are shown at their print size: PNG pixels / dpi x 96


@dataclass
class Block:
    """One piece of the report: a heading, a paragraph, a figure or a table."""
    kind: str  # heading | text | list | figure | table | details (a table behind <details>) | code
    text: str = ""
    path: Path | None = None
    table: pl.DataFrame | None = None
    unit: str = ""  # of the table's values (readable headers)


def _format(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table_view(table: pl.DataFrame, unit: str = "") -> dict:
    """A table for the template: readable headers and cells, each cell with whether its words are
    all short. Headers wrap between words only; so do cells whose words are all short (names,
    numbers, intervals); a cell with a long token (a path) may break anywhere to fit the page."""
    table = readable.readable(table, unit)

    def short_words(text: str) -> bool:
        return max((len(w) for w in text.split()), default=0) <= SHORT_WORD
    return {"header": table.columns,
            "rows": [[(text, short_words(text)) for text in row] for row in table.iter_rows()]}


def md_escape(text: str) -> str:
    """Data or config text for Markdown: HTML characters as entities; the characters that open
    links, images, code or table cells backslashed (underscores stay: they are in every name)."""
    text = html.escape(str(text), quote=False)
    return "".join("\\" + c if c in "\\`*[]|" else c for c in text)


def _markdown_table(table: pl.DataFrame, unit: str = "") -> str:
    """Our own pipe table, not tabulate's or polars' Markdown format: neither escapes a cell, so a
    ``|`` in a name adds a column and ``<script>`` reaches the page (tabulate 0.10 and polars 1.31
    checked; tests/test_report_shape.py::test_markdown_table_keeps_its_columns)."""
    table = readable.readable(table, unit)

    def line(cells):
        return "| " + " | ".join(md_escape(c) for c in cells) + " |"
    return "\n".join([line(table.columns), line(["---"] * table.width)]
                     + [line([_format(v) for v in row]) for row in table.iter_rows()])


def _display_width(png: Path) -> int:
    """CSS pixels of a figure at its print size, so every figure's text shows at one size
    (a narrow figure is not blown up to the page width; CSS caps wide ones at 100 %)."""
    with Image.open(png) as image:
        dpi = image.info.get("dpi", (figures.DPI, figures.DPI))[0] or figures.DPI
        return round(image.width / dpi * CSS_PX_PER_INCH)


@cache
def template() -> jinja2.Template:
    """The page's template, shipped as package data (pyproject: [tool.setuptools.package-data])."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("analysis", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)  # a misspelt field fails, never renders empty
    return env.get_template("report.html.j2")


def html_blocks(blocks: list[Block], out: Path) -> list[dict]:
    """What the template shows of each block: lines, tables as strings, figures as base64 PNG."""
    views = []
    for block in blocks:
        view = {"kind": block.kind, "text": block.text, "lines": block.text.splitlines()}
        if block.kind == "figure":
            view.update(png=base64.b64encode(block.path.read_bytes()).decode("ascii"),
                        width=_display_width(block.path), link=str(block.path.relative_to(out)))
        if block.table is not None:
            view["table"] = table_view(block.table, block.unit)
        views.append(view)
    return views


def render_html(blocks: list[Block], out: Path) -> str:
    return template().render(blocks=html_blocks(blocks, out)) + "\n"


def render_markdown(blocks: list[Block], out: Path) -> str:
    parts = []
    for block in blocks:
        if block.kind == "heading":
            parts.append(f"## {md_escape(block.text)}")
        elif block.kind == "text":
            parts.append("\n".join(md_escape(line) for line in block.text.splitlines()))
        elif block.kind == "code":
            # HTML, escaped, like index.html: no fence that a config value could close
            parts.append(f"<details><summary>Config</summary><pre>{html.escape(block.text)}</pre></details>")
        elif block.kind == "figure":
            link = urllib.parse.quote(block.path.relative_to(out).as_posix())
            parts.append(f"![{md_escape(block.text)}]({link})\n\n*{md_escape(block.text)}*")
        elif block.kind == "list":
            parts.append("\n".join(f"- {md_escape(line)}" for line in block.text.splitlines()))
        elif block.kind == "details":
            parts.append(f"<details><summary>{html.escape(block.text)}</summary>\n\n"
                         f"{_markdown_table(block.table, block.unit)}\n\n</details>")
        else:
            parts.append(f"{md_escape(block.text)}\n\n{_markdown_table(block.table, block.unit)}")
    return "# Experiment report\n\n" + "\n\n".join(parts) + "\n"
