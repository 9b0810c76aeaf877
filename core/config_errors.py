"""pydantic's findings on an experiment config, worded for the person who wrote it.

One message per key: its dotted name (``train.spatial.lr``, ``prune.chains[1]``), the value and
what is allowed (the type, the choices of a ``Literal``, the range of a constrained number), and
for an unknown key the closest valid dotted key (as ``--set`` always did). A YAML 1.1 float
without a decimal point (``1e-3``, read as a string) gets the spelling that YAML reads.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Literal, Union

from annotated_types import Ge, Gt, Le, Lt
from pydantic import ValidationError
from typing_extensions import is_typeddict

RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}
UNKNOWN_KEY_ERRORS = {"unexpected_keyword_argument", "extra_forbidden"}


def messages(exc: ValidationError, data: Any, root: type) -> list[str]:
    """One message per problem key of the raw config ``data`` (validated as ``root``: the
    ``ExperimentConfig`` class), in the order pydantic found them."""
    unknown: dict[tuple, list[str]] = {}  # parent path -> unknown keys under it
    found: dict[tuple, list[dict]] = {}  # key path -> pydantic's errors on it (several for a union)
    for error in exc.errors():
        loc = error["loc"]
        if error["type"] in UNKNOWN_KEY_ERRORS:
            unknown.setdefault(tuple(loc[:-1]), []).append(str(loc[-1]))
        else:
            path, _ = walk(root, loc)
            found.setdefault(path, []).append(error)
    out = [_unknown_message(root, parent, keys, data) for parent, keys in unknown.items()]
    return out + [_value_message(root, path, errors, data) for path, errors in found.items()]


def walk(root: type, loc: tuple) -> tuple[tuple, Any]:
    """The part of pydantic's error location ``loc`` that names config keys and list items (a
    union member's tag ends it), and the type declared there (constraints kept)."""
    path, hint = [], root
    for part in loc:
        hint = _unwrap(hint)
        if isinstance(part, str) and part in _members(hint):
            hint = _members(hint)[part]
        elif isinstance(part, int) and typing.get_origin(hint) is list:
            hint = typing.get_args(hint)[0]
        else:
            break
        path.append(part)
    return tuple(path), hint


def key_name(path: tuple) -> str:
    """``("prune", "chains", 1)`` -> ``prune.chains[1]``; the root is ``config``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "config"


def valid_keys(section: Any, prefix: str = "") -> list[str]:
    """Every dotted key of the config schema ``section`` (sections, their keys, a stream's keys)."""
    out = []
    for name, hint in _members(section).items():
        out.append(prefix + name)
        if _members(_unwrap(hint)):
            out += valid_keys(_unwrap(hint), f"{prefix}{name}.")
    return out


def describe(hint: Any) -> str:
    """A type as the config's reader knows it: ``int``, ``'all' or a list of int``, ``null``."""
    hint = _unwrap(hint, keep_none=True)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is Literal:
        return " or ".join(repr(a) for a in args)
    if origin is list:
        return f"a list of {describe(args[0])}" if args else "a list"
    if hint is dict or is_typeddict(hint) or dataclasses.is_dataclass(hint):
        return "a mapping"
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def value_range(hint: Any) -> str:
    """The range a constrained number must lie in (``> 0``, ``in [0, 1)``), else ''."""
    members = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (Union, types.UnionType) and len(members) > 1:  # int > 0 or 'auto'
        return "; ".join(r for r in map(value_range, members) if r)
    bounds = {}
    for item in _metadata(hint):
        for bound in getattr(item, "metadata", [item]):  # a Field(...) carries its bounds
            if isinstance(bound, (Gt, Ge, Lt, Le)):
                bounds[type(bound)] = bound
    low = bounds.get(Gt) or bounds.get(Ge)
    high = bounds.get(Lt) or bounds.get(Le)
    if low and high:
        return (f"in {'(' if Gt in bounds else '['}{_num(low)}, "
                f"{_num(high)}{')' if Lt in bounds else ']'}")
    if low:
        return f"{'>' if Gt in bounds else '>='} {_num(low)}"
    if high:
        return f"{'<' if Lt in bounds else '<='} {_num(high)}"
    return ""


def _num(bound) -> Any:
    for name in ("gt", "ge", "lt", "le"):
        if hasattr(bound, name):
            return getattr(bound, name)


def _unknown_message(root: type, parent: tuple, keys: list[str], data: Any) -> str:
    path, hint = walk(root, parent)
    known = list(_members(_unwrap(hint)))
    hints = []
    for key in keys:
        value = _lookup(data, (*path, key))
        # a mistyped section is matched by the keys written under it (trian.lr -> train.lr)
        written = [f"{key}.{k}" for k in value] if isinstance(value, dict) and value else [key]
        prefix = key_name(path) + "." if path else ""
        for name in written:
            close = difflib.get_close_matches(prefix + name, valid_keys(root), n=1, cutoff=0.5)
            if close:
                hints.append(f"{close[0]!r}" + (f" for {key!r}" if len(keys) > 1 else ""))
                break
    hint_text = f"did you mean {', '.join(hints)}?; " if hints else ""
    return f"{key_name(path)}: unknown keys {sorted(keys)} ({hint_text}known: {known})"


def _value_message(root: type, path: tuple, errors: list[dict], data: Any) -> str:
    _, hint = walk(root, path)
    where, value = key_name(path), _lookup(data, path)
    ranged = [e for e in errors if e["type"] in RANGE_ERRORS]
    if ranged:  # the type fits (one member of a union, maybe): only the range does not
        member = _member_with_range(hint, ranged[0]) if len(errors) > 1 else hint
        return f"{where}: {value!r} is not allowed (must be {value_range(member) or ranged[0]['msg']})"
    if isinstance(value, str) and _looks_like_float(value) and "float" in describe(hint):
        return (f"{where}: {value!r} was read by YAML as a string, not a number; "
                f"write it with a decimal point, e.g. {_yaml_float(value)}")
    if typing.get_origin(_unwrap(hint)) is Literal:
        return f"{where}: {value!r} is not one of {list(typing.get_args(_unwrap(hint)))}"
    return f"{where}: expected {describe(hint)}, got {value!r}"


def _member_with_range(hint: Any, error: dict) -> Any:
    """The member of a union type whose range ``error`` reports (``forward_batch: 0``)."""
    for member in typing.get_args(hint):
        if value_range(member):
            return member
    return hint


def _lookup(data: Any, path: tuple) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _members(hint: Any) -> dict[str, Any]:
    """The keys of a section (dataclass) or a per-stream mapping (TypedDict), with their types."""
    if dataclasses.is_dataclass(hint) or is_typeddict(hint):
        return typing.get_type_hints(hint, include_extras=True)
    return {}


def _unwrap(hint: Any, keep_none: bool = False) -> Any:
    """``Annotated[X, ...]`` -> X; ``X | None`` -> X (unless ``keep_none``)."""
    while typing.get_origin(hint) is typing.Annotated:
        hint = typing.get_args(hint)[0]
    if not keep_none and typing.get_origin(hint) in (Union, types.UnionType):
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
    if typing.get_origin(hint) is list:  # list[Annotated[int, ...]] reads as a list of int
        return list[_unwrap(typing.get_args(hint)[0], keep_none)] if keep_none else hint
    return hint


def _metadata(hint: Any) -> list:
    """The constraints of ``Annotated[X, ...]`` (inside ``X | None`` too)."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = members[0] if len(members) == 1 else hint
    return list(getattr(hint, "__metadata__", ()))


def _looks_like_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _yaml_float(text: str) -> str:
    """``1e-3`` -> ``1.0e-3`` (YAML 1.1 needs a '.' in a float's mantissa)."""
    mantissa, _, exponent = text.lower().partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    return mantissa + ("e" + exponent if exponent else "")
