"""Tuning methods, one file each. Every module in this package registers itself on import."""
import importlib
import pkgutil

from .registry import (
    Method,
    MixedBatch,
    Tuning,
    apply_method,
    get_method,
    list_methods,
    make_config,
    register,
    resolve_layers,
    serve_rows,
    unregister,
)

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "registry":
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["Method", "MixedBatch", "Tuning", "apply_method", "get_method", "list_methods", "make_config",
           "register", "resolve_layers", "serve_rows", "unregister"]
