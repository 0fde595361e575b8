"""A YAML value checked against the dataclass field it fills: unknown keys named with a close match, types
against the field's annotation (ints accepted where floats are), and fields normalised by a function."""
from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from ..data.rand_augment import resolve_policy
from ..errors import ConfigError


def check_keys(d: dict, known: list[str], source: str, prefix: str) -> None:
    for k in d:
        if k not in known:
            close = difflib.get_close_matches(str(k), known, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; known: {', '.join(known)}"
            raise ConfigError(f"{source}: unknown key '{prefix}{k}'{hint}")


# fields whose written value is checked and normalised by a function (value -> stored value)
NORMALISED = {"data.rand_augment": resolve_policy}


def _normalise(v: Any, source: str, key: str) -> Any:
    try:
        return NORMALISED[key](v)
    except ConfigError as e:
        raise ConfigError(f"{source}: {key}: {e}") from None


def _field_type(dc, name: str) -> str:
    return str(next(f.type for f in dataclasses.fields(dc) if f.name == name))


def _coerce(v: Any, typ: str, source: str, key: str) -> Any:
    """Check a YAML value against the field's annotation (ints accepted where floats are)."""
    if v is None:
        if "None" in typ:
            return None
        raise ConfigError(f"{source}: {key}: may not be null")
    base = typ.split("|")[0].strip()
    if base == "float" and isinstance(v, str):   # YAML 1.1 reads 5e-4 (no dot) as a string
        try:
            v = float(v)
        except ValueError:
            pass
    ok = {"int": isinstance(v, int) and not isinstance(v, bool),
          "float": isinstance(v, (int, float)) and not isinstance(v, bool),
          "bool": isinstance(v, bool), "str": isinstance(v, str), "list": isinstance(v, list),
          "dict": isinstance(v, dict)}.get(base, True)
    if not ok:
        raise ConfigError(f"{source}: {key}: expected {base}, got {v!r}")
    return float(v) if base == "float" else v


def field_value(dc, name: str, v: Any, source: str, key: str) -> Any:
    """What field `name` of the section dataclass `dc` stores for the YAML value `v` (`key`: section.name)."""
    return _normalise(v, source, key) if key in NORMALISED else _coerce(v, _field_type(dc, name), source, key)
