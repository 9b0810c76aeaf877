"""Rendering the report's blocks: ``index.html`` (figures embedded, tables through
``analysis.readable``) and ``report.md``. Every data or config string is escaped (HTML entities;
in Markdown also the characters that open links, code or table cells)."""
from __future__ import annotations

import base64
import html
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from PIL import Image

from . import figures, readable

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


def _html_table(table: pl.DataFrame, unit: str = "") -> str:
    """Headers wrap between words only; so do cells whose words are all short (names, numbers,
    intervals); a cell with a long token (a path) may break anywhere to fit the page."""
    table = readable.readable(table, unit)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)

    def cell(text: str) -> str:
        words = max((len(w) for w in text.split()), default=0) <= SHORT_WORD
        opening = '<td class="w">' if words else "<td>"
        return f"{opening}{html.escape(text)}</td>"
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in table.iter_rows())
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def md_escape(text: str) -> str:
    """Data or config text for Markdown: HTML characters as entities; the characters that open
    links, images, code or table cells backslashed (underscores stay: they are in every name)."""
    text = html.escape(str(text), quote=False)
    return "".join("\\" + c if c in "\\`*[]|" else c for c in text)


def _markdown_table(table: pl.DataFrame, unit: str = "") -> str:
    table = readable.readable(table, unit)

    def line(cells):
        return "| " + " | ".join(md_escape(c) for c in cells) + " |"
    return "\n".join([line(table.columns), line(["---"] * table.width)]
                     + [line([_format(v) for v in row]) for row in table.iter_rows()])


STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.85em}td,th{overflow-wrap:anywhere;border:1px solid #ccc;
padding:.2em .5em;text-align:right}th{background:#f0f0f0;vertical-align:bottom;overflow-wrap:normal}td.w{overflow-wrap:normal}
ul.findings li{margin:.4em 0;line-height:1.4}img{max-width:100%;height:auto}figure{margin:1em 0}
details{margin:.5em 0 1.5em}summary{cursor:pointer;color:#555}
figcaption,.caption{color:#555;font-size:.9em}pre{background:#f6f6f6;padding:1em;overflow:auto;
max-height:20em}"""


def _display_width(png: Path) -> int:
    """CSS pixels of a figure at its print size, so every figure's text shows at one size
    (a narrow figure is not blown up to the page width; CSS caps wide ones at 100 %)."""
    with Image.open(png) as image:
        dpi = image.info.get("dpi", (figures.DPI, figures.DPI))[0] or figures.DPI
        return round(image.width / dpi * CSS_PX_PER_INCH)


def render_html(blocks: list[Block], out: Path) -> str:
    parts = []
    for block in blocks:
        text = html.escape(block.text)
        if block.kind == "heading":
            parts.append(f"<h2>{text}</h2>")
        elif block.kind == "text":
            parts.append("".join(f"<p>{html.escape(line)}</p>" for line in block.text.splitlines()))
        elif block.kind == "code":
            parts.append(f"<details><summary>Config</summary><pre>{text}</pre></details>")
        elif block.kind == "figure":
            data = base64.b64encode(block.path.read_bytes()).decode("ascii")
            parts.append(f'<figure><img alt="{text}" width="{_display_width(block.path)}" '
                         f'src="data:image/png;base64,{data}">'
                         f"<figcaption>{text} ({html.escape(str(block.path.relative_to(out)))})</figcaption></figure>")
        elif block.kind == "list":
            parts.append('<ul class="findings">' + "".join(f"<li>{html.escape(line)}</li>"
                                                          for line in block.text.splitlines()) + "</ul>")
        elif block.kind == "details":
            parts.append(f"<details><summary>{text}</summary>{_html_table(block.table, block.unit)}</details>")
        else:
            parts.append(f'<p class="caption">{text}</p>{_html_table(block.table, block.unit)}')
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Experiment report</title>"
            f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>\n")


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
