"""Reading a config file: ``extends``, relative paths, and ``--set section.key=value`` overrides.

- ``extends: base.yaml`` (a path relative to the extending file) starts from that config, read
  the same way; the extending file's keys override it recursively (a mapping merges key by key,
  any other value replaces). A cycle of files is refused. The config hash is computed over the
  resolved config, so a file that extends another hashes as the full copy it replaces.
- Relative paths (``PATH_KEYS``) are made absolute against the folder of the file writing them.
- Each ``--set`` value is YAML-parsed (``--set train.lr=0.01``, ``--set stages=[train,fuse]``,
  ``--set experiment.root=null``) and put into the raw mapping before the config is built, so
  it is validated exactly like the same value written in the yaml (a mistyped key gets the
  closest valid one: ``core.config_errors``).
"""
from __future__ import annotations

from pathlib import Path

import yaml

from core.config import ConfigError, ExperimentConfig, resolve_paths

EXTENDS = "extends"


def read_config_file(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """The raw mapping of the yaml at ``path`` with its ``extends`` chain merged in and relative
    paths resolved (not yet validated)."""
    path = Path(path)
    if path.resolve() in _seen:
        chain = " -> ".join(p.name for p in (*_seen, path.resolve()))
        raise ConfigError(f"{path}: extends forms a cycle ({chain}); a config may not extend itself")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the config: {exc}") from exc
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: config: expected a mapping, got {data!r}")
    data = resolve_paths(data, path.parent)
    parent = data.pop(EXTENDS, None)
    if parent is None:
        return data
    if not isinstance(parent, str) or not parent:
        raise ConfigError(f"{path}: {EXTENDS}: expected the path of another config (relative to this "
                          f"file), got {parent!r}")
    return merged(read_config_file(path.parent / Path(parent).expanduser(), (*_seen, path.resolve())), data)


def merged(base: dict, over: dict) -> dict:
    """``base`` with ``over``'s keys over it; mappings in both merge recursively."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def parse_override(text: str) -> tuple[str, object]:
    """``"a.b=value"`` -> ``("a.b", parsed value)``."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. train.lr=0.01")
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
    """The yaml at ``path`` (``extends`` followed, relative paths resolved against the folder of
    the file writing them) with ``overrides`` applied, validated as one config."""
    path = Path(path)
    # paths in a file are relative to that file; paths given with --set to the working directory
    data = apply_overrides(read_config_file(path), list(overrides))
    try:
        return ExperimentConfig.from_dict(data)
    except ConfigError as exc:
        where = f"{path} with --set {' '.join(overrides)}" if overrides else str(path)
        raise ConfigError(f"{where}: {exc}") from exc
