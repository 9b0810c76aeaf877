"""The test suite's own layout (issue 28): shared helpers live in helper modules or conftest,
never in a test module another one imports, and no helper or fixture is defined twice."""
from __future__ import annotations

import ast
import collections
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def modules() -> dict[str, ast.Module]:
    return {p.name: ast.parse(p.read_text(), p.name) for p in sorted(TESTS.glob("*.py"))}


def imported_modules(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):  # function-level imports too
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_no_test_module_imports_another():
    offenders = {name: sorted(m for m in imported_modules(tree)
                              if m.split(".")[-1].startswith("test_") or m.endswith("conftest"))
                 for name, tree in modules().items()}
    assert not {k: v for k, v in offenders.items() if v}, "move the shared code to a helper module"


def test_no_helper_or_fixture_is_defined_twice():
    """Two top-level functions or classes with the same body (names aside) are one helper
    written twice."""
    bodies = collections.defaultdict(list)
    for name, tree in modules().items():
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("test_"):
                body = node.body[1:] if ast.get_docstring(node) else node.body
                bodies[ast.dump(ast.Module(body=body, type_ignores=[]))].append(f"{name}::{node.name}")
    assert not [where for where in bodies.values() if len(where) > 1]


def test_the_rules_see_a_copy_and_an_import(tmp_path):
    """The checks above can fail: a copied helper and a test-module import are found."""
    copied = ast.parse("def a(x):\n    '''doc'''\n    return x + 1\n\ndef b(y):\n    return y + 1\n")
    same = [ast.dump(ast.Module(body=n.body[1:] if ast.get_docstring(n) else n.body, type_ignores=[]))
            for n in copied.body]
    assert same[0] != same[1]  # argument names differ: not a copy
    copied = ast.parse("def a(x):\n    return x + 1\n\ndef b(x):\n    return x + 1\n")
    assert len({ast.dump(ast.Module(body=n.body, type_ignores=[])) for n in copied.body}) == 1
    assert "tests.test_tune" in imported_modules(ast.parse("def f():\n    from tests.test_tune import x\n"))


PRODUCT = ("analysis", "benchmarks", "core", "explanations", "ingest", "pipeline", "pruning", "shards", "training")


def product_modules() -> list[str]:
    import pkgutil
    names = []
    for package in PRODUCT:
        names.append(package)
        names += [m.name for m in pkgutil.walk_packages([str(TESTS.parent / package)], f"{package}.")]
    return names


def test_every_product_module_imports():
    """The fast lane (`-m "not slow"`) imports every product module at least here: a module
    that only a slow end-to-end test would import cannot break unseen."""
    import importlib
    names = product_modules()
    assert len(names) > 60 and "pipeline.sweep" in names and "explanations.metrics.road" in names
    failed = {}
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 (each failure is reported with its module)
            failed[name] = f"{type(exc).__name__}: {exc}"
    assert not failed
