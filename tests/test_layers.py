"""The import contract (issue 28): the packages form layers, each importing only those below
it; no import cycle between files; no module imported through a string; no file over 500 lines.

    core                      config, results store, atomic writes, lock, progress, threads ...
    shards                    the shard format and the DALI loader
    ingest | training         videos -> shards | models, loop, evaluation, fusion (independent)
    pruning                   Network Slimming: groups, surgery, the chain of steps
    explanations              saliency methods, IROF and other metrics, the explain stage
    analysis                  statistics, figures, the report
    pipeline                  the sweep, its stages, Ray Tune glue, cost plan, preflight
    benchmarks, scripts       anything

Imports inside functions count as imports. A shim that keeps an old ``python -m`` path working
(``core.commands.SHIMS``) is the one exception, and holds nothing but that import.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from core.commands import SHIMS

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"core": 0, "shards": 1, "ingest": 2, "training": 2, "pruning": 3, "explanations": 4,
          "analysis": 5, "pipeline": 6, "benchmarks": 7, "scripts": 7}
PRODUCT = [p for p in LAYERS if p not in ("benchmarks", "scripts")]
MAX_LINES = 500


def modules() -> dict[str, Path]:
    found = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = modules()


def imports(path: Path) -> set[str]:
    """The project modules ``path`` imports (at any depth: function-level imports count)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}: relative import of {node.module}"
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        out |= {n for n in names if n in MODULES}
    return out


GRAPH = {name: imports(path) - {name} for name, path in MODULES.items()}


def layer(module: str) -> int:
    return LAYERS[module.partition(".")[0]]


def test_every_import_goes_down_or_sideways_within_a_package():
    upward = [f"{m} (layer {layer(m)}) imports {t} (layer {layer(t)})" for m, targets in GRAPH.items()
              if m not in SHIMS for t in sorted(targets) if layer(t) > layer(m)]
    assert not upward, "\n".join(upward)


def test_ingest_and_training_do_not_import_each_other():
    across = [f"{m} imports {t}" for m, targets in GRAPH.items() for t in targets
              if {m.partition(".")[0], t.partition(".")[0]} == {"ingest", "training"}]
    assert not across, "\n".join(across)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node), on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return out


def test_no_import_cycle_between_files():
    # a package's __init__ importing its own modules is how a package exports: not a cycle
    graph = {m: {t for t in ts if not (MODULES[t].name == "__init__.py" and m.startswith(t + "."))}
             for m, ts in GRAPH.items()}
    assert cycles(graph) == []


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


STRING_IMPORT = re.compile(r"^(%s)(\.\w+)+(:\w+)?$" % "|".join(LAYERS))


def test_no_module_is_imported_through_a_string():
    found = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and ":" in node.value \
                    and STRING_IMPORT.match(node.value) and node.value.partition(":")[0] in MODULES:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not found, "\n".join(found)


def test_no_file_over_500_lines():
    long = {str(p.relative_to(ROOT)): n for p in MODULES.values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"over {MAX_LINES} lines: {long}"


@pytest.mark.parametrize("shim", sorted(SHIMS))
def test_a_shim_only_imports_its_target(shim):
    tree = ast.parse(MODULES[shim].read_text())
    assert GRAPH[shim] == {SHIMS[shim]}
    assert [type(n).__name__ for n in tree.body] == ["Expr", "ImportFrom", "If"]
