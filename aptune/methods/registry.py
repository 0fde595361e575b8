"""The method contract and registry.

A method is one file that registers itself with

    @register("name", Config, "one-line description", **traits)
    def apply(model: Backbone, config: Config) -> list[nn.Module]:
        ...  # add modules to the model's seams; return the modules whose parameters train

What a method declares, and nowhere else decides:
  Config            a dataclass whose construction checks its own options (`__post_init__`), so a
                    run config with a bad option fails before any work
  apply             puts its modules into the block seams (models/layers.py) and returns them
  traits            caches_features: nothing before the head trains, so pooled features may be cached
                    full_state: it trains the whole model, so checkpoints keep the full state
                    layouts: the backbone token layouts ("joint", "frames") it supports
  no_weight_decay   a module it adds may define `no_weight_decay() -> set of its parameter names`
                    (timm's convention); the optimizer never decays those
  checkpoint formats of its own (the official APT layout) register in its file
                    (aptune.models.checkpoints.register_format)
  cannot_share      why its adapters cannot share one frozen backbone with other tasks (full fine-tuning:
                    it trains the whole backbone); empty when they can, see below

Serving a mixed batch (aptune.multitask, PEFT's `_mixed_batch_forward`): many tasks share one frozen
backbone, and each sample of a batch belongs to one task. Every module a method puts into the model (a
seam, or a module it replaces, such as LoRA's Linear) says how it serves such a batch, with a class
attribute

    mixed_forward(batch: MixedBatch, tasks: {task index: module}, plain, *args) -> the seam's output

`tasks` holds the modules the tasks of this batch have at that place (one per task, each rebuilt from
its adapter), `plain` computes what the place gives without them (the empty seam, or the shared frozen
module a method replaced), `args` are the place's usual arguments. A module that treats every sequence
on its own takes `serve_rows`. A module without `mixed_forward`, and any trained tensor that no such
module or head holds, makes aptune.multitask refuse the adapter: nothing trained is ever dropped.

`apply_method` then freezes the whole model and unfreezes exactly the returned modules plus the
backbone's `head_modules()`. Nothing is decided by parameter-name patterns. What trains and the
train/eval policy are kept in `model.tuning` (a `Tuning`): while training, only those modules follow
train(); the frozen backbone stays in eval mode (no dropout or drop-path in it).
"""
from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn

from ..errors import ConfigError, UnknownNameError
from ..models.layers import TokenLayout

LAYOUTS = ("joint", "frames")


@dataclass(frozen=True)
class Method:
    name: str
    config: type
    apply: Callable[[nn.Module, Any], list[nn.Module]]
    description: str
    caches_features: bool = False
    full_state: bool = False
    layouts: tuple[str, ...] = LAYOUTS
    cannot_share: str = ""


@dataclass
class Tuning:
    """A model's tuning state: its method, that method's config and the names of what trains."""
    method: Method
    config: Any
    trainable_names: list[str]

    @property
    def name(self) -> str:
        return self.method.name

    def set_train_mode(self, model: nn.Module, mode: bool) -> None:
        """train(mode) for the modules that train (flagged `is_adapter`); the rest stays in eval."""
        if not mode or getattr(model, "is_adapter", False):
            return
        nn.Module.train(model, False)
        for m in model.modules():
            if getattr(m, "is_adapter", False):
                nn.Module.train(m, True)


_REGISTRY: dict[str, Method] = {}


def register(name: str, config: type, description: str, *, caches_features: bool = False,
             full_state: bool = False, layouts: tuple[str, ...] = LAYOUTS, cannot_share: str = ""):
    bad = set(layouts) - set(LAYOUTS)
    if bad:
        raise ValueError(f"method {name!r}: unknown layouts {sorted(bad)}; known: {LAYOUTS}")

    def wrap(fn):
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} registered twice")
        _REGISTRY[name] = Method(name, config, fn, description, caches_features, full_state, tuple(layouts),
                                 cannot_share)
        return fn
    return wrap


def unregister(name: str) -> None:
    """Remove a method (tests that register a toy method clean up with this)."""
    _REGISTRY.pop(name, None)


def list_methods() -> list[str]:
    return sorted(_REGISTRY)


def get_method(name: str) -> Method:
    if name not in _REGISTRY:
        raise UnknownNameError(f"unknown method {name!r}; known methods: {', '.join(list_methods())}")
    return _REGISTRY[name]


def make_config(name: str, **options):
    """The method's config dataclass from keyword options; unknown or bad options raise ConfigError."""
    spec = get_method(name)
    known = {f.name for f in dataclasses.fields(spec.config)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"method {name!r} has no option(s) {unknown}; its options are {sorted(known)}")
    try:
        return spec.config(**options)
    except TypeError as e:
        raise ConfigError(f"method {name!r}: {e}") from None


def apply_method(model: nn.Module, name: str, config=None, **options) -> nn.Module:
    """Add method `name` to `model` in place and set exactly what trains. Returns the model."""
    spec = get_method(name)
    if model.tuning is not None:
        raise ConfigError(f"model already has method {model.tuning.name!r}; create a fresh model for {name!r}")
    if config is None:
        config = make_config(name, **options)
    elif options:
        raise ConfigError("pass either a config object or keyword options, not both")
    if model.layout not in spec.layouts:
        raise ConfigError(f"method {name!r} does not support the {model.layout!r} token layout of this "
                          f"{model.family} backbone; it supports {', '.join(spec.layouts)}")
    modules = list(spec.apply(model, config))
    trains = modules + list(model.head_modules())
    model.requires_grad_(False)
    for m in trains:
        m.requires_grad_(True)
        m.is_adapter = True
    ids = {id(p) for m in trains for p in m.parameters()}
    names = [n for n, p in model.named_parameters() if id(p) in ids]
    model.tuning = Tuning(spec, config, names)
    model.train(model.training)
    return model


# ---- serving a mixed batch -------------------------------------------------------------------------
class MixedBatch(threading.local):
    """Which task each clip of the batch being served belongs to (set by aptune.multitask per forward).
    Per thread, so forwards running at once in several threads (a server) each see their own batch."""

    def __init__(self):
        self.clip_task: torch.Tensor | None = None     # (B,) task index per clip
        self.present: list[int] = []                   # the task indices in this batch
        self.num_tasks = 0                             # task indices are 0 .. num_tasks - 1

    def ids(self, num_sequences: int) -> torch.Tensor:
        """(S,) task index per sequence; a clip's frames folded into the batch axis repeat its index."""
        B = self.clip_task.shape[0]
        if num_sequences % B:
            raise ValueError(f"{num_sequences} sequences in a batch of {B} clips: not a whole number per clip")
        return self.clip_task if num_sequences == B else self.clip_task.repeat_interleave(num_sequences // B)

    def __reduce__(self):                              # a copy (pickle, deepcopy) starts with no batch
        return type(self), ()


def take_rows(arg, rows: torch.Tensor, num_sequences: int):
    """The part of a place's argument that belongs to `rows` (S,) bool: a tensor's rows, a layout's key mask."""
    if isinstance(arg, torch.Tensor) and arg.ndim and arg.shape[0] == num_sequences:
        return arg[rows]
    if isinstance(arg, TokenLayout) and arg.key_mask is not None:
        return dataclasses.replace(arg, key_mask=arg.key_mask[rows])
    return arg


def serve_rows(batch: MixedBatch, tasks: dict, plain: Callable, *args):
    """`mixed_forward` of a module that treats every sequence on its own: `plain` on the whole batch,
    then each task's module on its own rows (args[0] is a tensor with one row per sequence)."""
    S = args[0].shape[0]
    ids = batch.ids(S)
    out = plain(*args)
    if any(out is a for a in args):
        out = out.clone()                              # never write into the caller's tensor
    for i, mod in tasks.items():
        rows = ids == i
        out[rows] = mod(*(take_rows(a, rows, S) for a in args)).to(out.dtype)
    return out


def resolve_layers(layers, depth: int, method: str, contiguous: bool = False) -> list[int]:
    """Block indices for `layers` (None = all; negative indices count from the end)."""
    if layers is None:
        return list(range(depth))
    if isinstance(layers, int):
        layers = [layers]
    out = []
    for i in layers:
        if not isinstance(i, int) or not -depth <= i < depth:
            raise ConfigError(f"{method}.layers: block index {i!r} is outside the model's {depth} blocks "
                              f"(0..{depth - 1})")
        out.append(i % depth)
    out = sorted(set(out))
    if not out:
        raise ConfigError(f"{method}.layers: empty; use None for all blocks")
    if contiguous and out != list(range(out[0], out[-1] + 1)):
        raise ConfigError(f"{method}.layers: {out} must be a contiguous range of blocks")
    return out


def check_int(method: str, field: str, value, minimum: int) -> None:
    """ConfigError naming `method.field` unless value is an integer >= minimum."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{method}.{field}: must be an integer >= {minimum}, got {value!r}")


def check_prob(method: str, field: str, value) -> None:
    """ConfigError naming `method.field` unless value is a dropout probability in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigError(f"{method}.{field}: must be in [0, 1), got {value!r}")


def check_layers(method: str, layers) -> None:
    """ConfigError unless `layers` is None, an int or a list of ints (checked against depth at apply)."""
    items = [layers] if isinstance(layers, int) else layers
    if layers is not None and (not isinstance(items, (list, tuple)) or
                               not all(isinstance(i, int) and not isinstance(i, bool) for i in items)):
        raise ConfigError(f"{method}.layers: must be null, a block index or a list of block indices, got {layers!r}")
