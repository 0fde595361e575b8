"""The backbone families and the zoo: each family's module registers itself on import (models/__init__.py
imports them), as timm registers models beside their family.

    register_family(name, config class, backbone class)
    register_model(name, config, tiny=False, aliases=())   a named config (tiny: a test-size model, for tests
                                               and smoke runs; aliases: its older names, which keep working)
    get_config(name, **overrides)              a fresh config of a zoo model (or of an old name: ALIASES)
    build_backbone(config)                     the backbone module of that config's family
    config_from_dict(family, d)                a config read back from an adapter file

A family's module gives its config dataclass (`family` = its name, `to_dict` / `from_dict`, `validate`,
`grid`), its `Backbone` subclass (models/backbone.py), its checkpoint formats (models/checkpoints.py's
`register_format`) and its zoo models, with at least one tiny one: the tests take the families and
their tiny models from here.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import ConfigError, UnknownNameError


@dataclass(frozen=True)
class Family:
    name: str
    config: type
    backbone: type


FAMILIES: dict[str, Family] = {}
ZOO: dict[str, object] = {}
TINY: list[str] = []            # test-size zoo models, in the order they registered
ALIASES: dict[str, str] = {}    # old name -> zoo name: what configs and checkpoints written before a rename use


def register_family(name: str, config: type, backbone: type) -> None:
    if name in FAMILIES:
        raise ValueError(f"backbone family {name!r} registered twice")
    if getattr(config, "family", None) != name:
        raise ValueError(f"backbone family {name!r}: its config class {config.__name__} must say family = {name!r}")
    FAMILIES[name] = Family(name, config, backbone)


def register_model(name: str, config, tiny: bool = False, aliases: tuple[str, ...] = ()) -> None:
    for n in (name, *aliases):
        if n in ZOO or n in ALIASES:
            raise ValueError(f"zoo model {n!r} registered twice")
    if family_of(config) not in FAMILIES:
        raise ValueError(f"zoo model {name!r}: register its family {family_of(config)!r} first")
    ZOO[name] = config
    ALIASES.update(dict.fromkeys(aliases, name))
    if tiny:
        TINY.append(name)


def unregister_family(name: str) -> None:
    """Remove a family and its zoo models (tests that register a toy family clean up with this)."""
    FAMILIES.pop(name, None)
    gone = {n for n, c in ZOO.items() if family_of(c) == name}
    for n in gone:
        del ZOO[n]
    for old in [a for a, n in ALIASES.items() if n in gone]:
        del ALIASES[old]
    TINY[:] = [n for n in TINY if n not in gone]


def list_families() -> list[str]:
    return list(FAMILIES)


def list_models() -> list[str]:
    return sorted(ZOO)


def tiny_models() -> list[str]:
    """The test-size zoo models of every family."""
    return list(TINY)


def canonical_name(name: str) -> str:
    """The zoo name `name` stands for (itself, or what its alias names)."""
    return ALIASES.get(name, name)


def is_model(name) -> bool:
    """A zoo model's name or alias."""
    return isinstance(name, str) and canonical_name(name) in ZOO


def get_config(name: str, **overrides):
    if not is_model(name):
        raise UnknownNameError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return replace(ZOO[canonical_name(name)], **overrides)


def family_of(config) -> str:
    return type(config).family


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise ConfigError(f"unknown backbone family {name!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def build_backbone(config):
    """The backbone module for `config` (any family's config class)."""
    fam = FAMILIES.get(getattr(type(config), "family", None))
    if fam is not None and isinstance(config, fam.config):
        return fam.backbone(config)
    raise ConfigError(f"no backbone family for config {type(config).__name__}; families: {', '.join(FAMILIES)}")


def config_from_dict(family: str, d: dict):
    return get_family(family).config.from_dict(d)
