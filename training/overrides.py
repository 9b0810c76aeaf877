"""Command-line overrides of config values: ``--set section.key=value``.

Each value is YAML-parsed (``--set train.lr=0.01``, ``--set stages=[train,fuse]``,
``--set experiment.root=null``) and put into the raw config mapping before the
config is built, so it is validated exactly like the same value written in the yaml.
A key that is not in the config schema is refused with the closest valid key.
"""
from __future__ import annotations

import dataclasses
import difflib
import typing
from pathlib import Path

import yaml

from .config import STREAM_SECTIONS, STREAMS, ConfigError, ExperimentConfig, resolve_paths


def valid_keys(cls: type = ExperimentConfig, prefix: str = "") -> list[str]:
    """Every dotted key of the config schema (leaves and sections)."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        keys.append(key)
        if dataclasses.is_dataclass(hints[f.name]):
            keys.extend(valid_keys(hints[f.name], key + "."))
        elif f.name in STREAMS and cls in STREAM_SECTIONS:  # train.spatial.lr, prune.temporal.lr, ...
            keys.extend(f"{key}.{k}" for k in STREAM_SECTIONS[cls])
    return keys


def parse_override(text: str) -> tuple[str, object]:
    """``"a.b=value"`` -> ``("a.b", parsed value)``; the key is checked against the schema."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. train.lr=0.01")
    keys = valid_keys()
    if key not in keys:
        close = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else f" (sections: {[k for k in keys if '.' not in k]})"
        raise ConfigError(f"--set {text!r}: unknown config key {key!r}{hint}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {text!r}: cannot parse the value as YAML: {exc}") from exc
    return key, value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """A copy of the raw config mapping with each ``KEY=VALUE`` set (later ones win)."""
    data = dict(data)
    for text in overrides:
        key, value = parse_override(text)
        *sections, leaf = key.split(".")
        node = data
        for section in sections:
            child = node.get(section)
            node[section] = dict(child) if isinstance(child, dict) else {}
            node = node[section]
        node[leaf] = value
    return data


def load_config(path: str | Path, overrides: list[str] = ()) -> ExperimentConfig:
    """The yaml at ``path`` (relative paths resolved against its folder) with ``overrides``
    applied, validated as one config."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the config: {exc}") from exc
    # paths in the file are relative to the file; paths given with --set to the working directory
    data = apply_overrides(resolve_paths(data, path.parent), list(overrides))
    try:
        return ExperimentConfig.from_dict(data)
    except ConfigError as exc:
        where = f"{path} with --set {' '.join(overrides)}" if overrides else str(path)
        raise ConfigError(f"{where}: {exc}") from exc
