"""Reading a run configuration: YAML files with `_base_` includes (merged first; later files, then
overrides win) and dotted overrides (`optim.lr=0.01`, values parsed as YAML)."""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from ..errors import ConfigError, MissingFileError
from .schema import Config


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise MissingFileError(f"config file not found: {path}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not a text file: byte {e.start} (0x{raw[e.start]:02x}) "
                          "is not UTF-8") from None
    try:
        d = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}:{where}: malformed YAML: {problem}") from None
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(d).__name__}")
    return d


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _load_tree(path: Path, seen: tuple = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: _base_ include cycle")
    d = _read_yaml(path)
    bases = d.pop("_base_", [])
    merged: dict = {}
    for b in [bases] if isinstance(bases, str) else bases:
        merged = _merge(merged, _load_tree(path.parent / b, seen + (path,)))
    return _merge(merged, d)


def apply_override(d: dict, item: str) -> dict:
    """`a.b=value` with value parsed as a YAML scalar (or list) into the nested dict d."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected section.key=value")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"override {item!r}: key must be section.key, e.g. optim.lr=0.01")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"override {item!r}: value is not valid YAML") from None
    sec = d.setdefault(parts[0], {})
    if not isinstance(sec, dict):
        raise ConfigError(f"override {item!r}: section {parts[0]!r} is not a mapping")
    sec[parts[1]] = value
    return d


def load_config(path: str | os.PathLike, overrides: list[str] | tuple = ()) -> Config:
    """Read a YAML config (with `_base_` includes) and apply dotted overrides."""
    d = _load_tree(Path(path))
    for item in overrides:
        apply_override(d, item)
    return Config.from_dict(d, source=str(path))
