"""The configuration reference: every key of ``ExperimentConfig`` with its type, default, allowed
values and meaning, read from the schema itself so the documentation cannot drift from it.

- key, type and default: the dataclasses of ``core.config``;
- allowed values: a ``Literal`` type's choices, a number's range (its constraints in the schema,
  worded by ``core.config_errors.value_range``), and the rule a message of
  ``pipeline.validation`` states for its key (read from its source);
- meaning: the comment on the field's line in ``core/config.py``, after the comment lines
  right above it (each field has one: ``tests/test_docs.py`` checks).

``python -m pipeline.config_reference`` prints the Markdown the docs site shows
(``docs/configuration.md``, filled in by ``scripts/mkdocs_hooks.py`` at build time).
"""
from __future__ import annotations

import ast
import dataclasses
import io
import sys
import tokenize
import typing
from pathlib import Path

from typing_extensions import is_typeddict

from core import config as config_module
from core.config import ExperimentConfig
from core.config_errors import value_range

CONFIG_SOURCE = Path(config_module.__file__)
VALIDATION_SOURCE = Path(__file__).with_name("validation.py")


@dataclasses.dataclass
class Key:
    key: str  # e.g. "train.lr"
    type: str
    default: str
    allowed: str
    meaning: str


def field_comments(source: str) -> dict[tuple[str, str], str]:
    """(class name, field name) -> its comment: the comment lines right above the field, then the
    comment on its own line(s)."""
    comments: dict[int, str] = {}  # line -> comment text
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                              tokenize.ENDMARKER):
            code_lines.update(range(tok.start[0], tok.end[0] + 1))
    out = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
                continue
            above, line = [], item.lineno - 1
            while line in comments and line not in code_lines:
                above.insert(0, comments[line])
                line -= 1
            own = [comments[n] for n in range(item.lineno, item.end_lineno + 1) if n in comments]
            out[(node.name, item.target.id)] = ": ".join(part for part in (" ".join(above), " ".join(own)) if part)
    return out


def _message_rule(node: ast.JoinedStr) -> tuple[str, str] | None:
    """(key, rule) from a message f"KEY: {value} is not allowed (RULE)" or "... must RULE"."""
    text = "".join(v.value if isinstance(v, ast.Constant) else "…" for v in node.values)
    key, sep, rest = text.partition(": ")
    if not sep or " " in key or "." not in key:
        return None
    if "is not allowed (" in rest:
        rule = rest.split("is not allowed (", 1)[1].rsplit(")", 1)[0]
    elif " must " in rest:
        rule = "must " + rest.split(" must ", 1)[1]
    else:
        return None
    return key, rule.replace("must be ", "")


def message_rules(source: str) -> dict[str, str]:
    """key -> the rule a problem message of ``pipeline.validation`` states for it."""
    out: dict[str, str] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "append" \
                and node.args and isinstance(node.args[0], ast.JoinedStr):
            rule = _message_rule(node.args[0])
            if rule and rule[0] not in out:
                out[rule[0]] = rule[1]
    return out


def type_name(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return "str" if all(isinstance(a, str) for a in args) else "literal"
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        names = [type_name(a) for a in args if a is not type(None)]
        names = list(dict.fromkeys(names))
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict or tp is dict or is_typeddict(tp):  # a per-stream section is a TypedDict
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def literal_choices(tp) -> list:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return list(args)
    return [c for a in args for c in literal_choices(a)]


def show(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, list):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return repr(value)


def default_of(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def section_keys(section: type, prefix: str, comments: dict, ranges: dict) -> list[Key]:
    """The keys of one section; a field that is itself a dataclass contributes its own keys."""
    out = []
    hints = typing.get_type_hints(section)
    constrained = typing.get_type_hints(section, include_extras=True)
    for f in dataclasses.fields(section):
        key = f"{prefix}.{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            out += section_keys(hints[f.name], key, comments, ranges)
            continue
        choices = literal_choices(hints[f.name])
        allowed = "; ".join(part for part in (", ".join(f"`{show(c)}`" for c in choices),
                                              value_range(constrained[f.name])) if part)
        if key in ranges:
            allowed = (allowed + "; " if allowed else "") + ranges[key]
        out.append(Key(key, type_name(hints[f.name]), show(default_of(f)), allowed,
                       comments.get((section.__name__, f.name), "")))
    return out


def keys() -> list[Key]:
    """Every key of the experiment config, in the order of the schema."""
    comments = field_comments(CONFIG_SOURCE.read_text())
    ranges = message_rules(VALIDATION_SOURCE.read_text())
    out = []
    top_hints = typing.get_type_hints(ExperimentConfig)
    for top in dataclasses.fields(ExperimentConfig):
        section = top_hints[top.name]
        if not dataclasses.is_dataclass(section):  # a top-level key (stages)
            out.append(Key(top.name, type_name(section), show(default_of(top)), "",
                           comments.get(("ExperimentConfig", top.name), "")))
            continue
        out += section_keys(section, top.name, comments, ranges)
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown() -> str:
    """The reference as Markdown: one table per section."""
    lines, section = [], None
    for k in keys():
        name = k.key.split(".")[0] if "." in k.key else "top level"
        if name != section:
            section = name
            lines += ["", f"## `{name}`" if name != "top level" else "## Top level", "",
                      "| key | type | default | allowed | meaning |", "| --- | --- | --- | --- | --- |"]
        default = f"`{_cell(k.default)}`"
        lines.append(f"| `{k.key}` | {_cell(k.type)} | {default} | {_cell(k.allowed)} | {_cell(k.meaning)} |")
    return "\n".join(lines).strip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m pipeline.config_reference",
                                     description="Print the configuration reference (Markdown).",
                                     epilog="exit codes: 0 printed; 2 bad command line")
    parser.parse_args(argv)
    sys.stdout.write(markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
