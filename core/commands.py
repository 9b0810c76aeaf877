"""The project's command-line entry points, one list for the docs and the tests.

An entry point is a module of the project's packages (and ``benchmarks/``) with a ``main``
function run under ``if __name__ == "__main__"``; its console script, if any, comes from
``pyproject.toml``'s ``[project.scripts]``. What it does and its exit codes are read from its
``argparse.ArgumentParser(description=..., epilog=...)`` call without importing it (the
benchmarks import torch, Ray and DALI), so the list is cheap to build: ``tests/test_cli.py``
runs every one's ``--help`` and checks the two agree; ``scripts/mkdocs_hooks.py`` writes the
table into ``docs/getting-started.md``.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "shards", "ingest", "training", "pruning", "explanations", "analysis", "pipeline", "benchmarks")
# old `python -m` paths kept working after issue 28 moved their modules: shim -> module
SHIMS = {"training.sweep": "pipeline.sweep", "training.config_reference": "pipeline.config_reference"}
MAIN_GUARD = re.compile(r'^if __name__ == "__main__":', re.MULTILINE)


@dataclass(frozen=True)
class EntryPoint:
    module: str  # e.g. "pipeline.sweep"
    script: str | None  # console script, e.g. "crossroads-sweep"
    summary: str  # what it does (the parser's description, else the module docstring's first line)
    exit_codes: str  # the epilog's "exit codes: ..." text

    @property
    def target(self) -> str:
        return f"{self.module}:main"

    @property
    def command(self) -> str:
        return f"python -m {self.module}"


def console_scripts(root: Path = ROOT) -> dict[str, str]:
    """module -> console script name, from pyproject.toml's [project.scripts]."""
    text = (root / "pyproject.toml").read_text()
    try:
        import tomllib  # Python >= 3.11
        scripts = tomllib.loads(text)["project"].get("scripts", {})
    except ModuleNotFoundError:  # 3.10: the section's `name = "module:function"` lines
        section = text.split("[project.scripts]", 1)[-1].split("\n[", 1)[0]
        scripts = dict(re.findall(r'^([\w.-]+)\s*=\s*"([^"]+)"', section, re.MULTILINE))
    return {target.partition(":")[0]: name for name, target in scripts.items()}


def _constant(node, names: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return names.get(node.id)
    return None


def parser_texts(source: str) -> tuple[str | None, str | None]:
    """(description, epilog) of the module's ArgumentParser call, where they are literal strings
    (or module-level string constants)."""
    tree = ast.parse(source)
    names = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
             for t in n.targets if isinstance(t, ast.Name)
             and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "ArgumentParser":
            kw = {k.arg: _constant(k.value, names) for k in node.keywords}
            return kw.get("description"), kw.get("epilog")
    return None, None


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    match = re.match(r"(.+?[.:])(\s|$)", text)
    return (match.group(1) if match else text).rstrip(".:")


def entry_points(root: Path = ROOT) -> list[EntryPoint]:
    """Every entry point: the console scripts first (in pyproject's order), then the rest by name."""
    scripts = console_scripts(root)
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).glob("*.py")):
            source = path.read_text()
            if not MAIN_GUARD.search(source) or not re.search(r"^def main\(", source, re.MULTILINE):
                continue
            module = f"{package}.{path.stem}"
            description, epilog = parser_texts(source)
            summary = _first_sentence(description or ast.get_docstring(ast.parse(source)) or "")
            codes = (epilog or "").split("exit codes:", 1)[-1].strip() if epilog and "exit codes:" in epilog else ""
            found.append(EntryPoint(module, scripts.get(module), summary, " ".join(codes.split())))
    order = list(scripts)
    return sorted(found, key=lambda e: (e.module not in scripts,
                                        order.index(e.module) if e.module in scripts else 0, e.module))


def markdown(root: Path = ROOT) -> str:
    """The entry points as a Markdown table."""
    rows = ["| command | console script | what | exit codes |", "| --- | --- | --- | --- |"]
    for e in entry_points(root):
        script = f"`{e.script}`" if e.script else ""
        cells = [f"`{e.command}`", script, e.summary.replace("``", "`"), e.exit_codes]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"
