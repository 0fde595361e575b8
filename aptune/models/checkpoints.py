"""Checkpoint interop: read any supported file or folder into a built aptune model.

    load_checkpoint(model, path)
      read_checkpoint(path)   file (.pth/.pt/.bin pickle with weights_only=True, .safetensors, a
                              TorchScript archive read as tensors: torchscript.py) or a Hugging Face
                              folder (config.json, parsed once, + weights); a Hub id `org/name[@rev]`
                              is fetched into huggingface_hub's cache first (hub.py)
      unwrap                  `model` / `module` / `state_dict` wrappers, DDP `module.` prefixes
      convert                 the first registered format whose `detect` accepts the keys turns them
                              into aptune names (a `Converted`)
      fit                     checks against the model: a head of another shape is skipped (the
                              usual transfer case); position tables go to the backbone's own rule;
                              any other mismatch or missing backbone tensor is an error

Formats are recognised by their keys, never by file names, and each lives beside its backbone
family (`videomae/formats.py`, `image_vit/formats.py`) or method (the official APT layout in
`methods/apt.py`), registered with `register_format` when that module is imported (importing any part
of aptune imports them all: the package imports every family and method). Pickles are untrusted:
only tensors, containers and a few harmless types (argparse.Namespace, numpy scalars/dtypes/arrays)
may be unpickled.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..errors import CheckpointError, MissingFileError, UnsafeCheckpointError
from ..hub import resolve
from .torchscript import read_torchscript
from .zoo import build_backbone

try:
    from numpy._core import multiarray as ma
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as ma

__all__ = ["load_checkpoint", "read_state", "read_checkpoint", "describe_checkpoint", "safe_torch_load",
           "register_format", "formats", "Converted", "Source", "UnsafeCheckpointError"]

WRAPPERS = ("model", "module", "state_dict", "model_state", "model_state_dict")
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


# ---- reading -------------------------------------------------------------------------------------
def _allowed_globals() -> list:
    """Harmless types real checkpoints pickle: argparse.Namespace (APT/VideoMAE `args`), numpy scalars,
    dtypes and arrays (DeepSpeed saves, RNG states). Entries with a name also accept numpy 1.x module paths."""
    allowed: list = [argparse.Namespace, np.dtype, np.ndarray, ma.scalar, ma._reconstruct,
                     (ma.scalar, "numpy.core.multiarray.scalar"),
                     (ma._reconstruct, "numpy.core.multiarray._reconstruct")]
    if hasattr(np, "dtypes"):
        allowed += [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    return allowed


def safe_torch_load(path: str | os.PathLike):
    """torch.load with weights_only=True and the allow-list above; every user-supplied pickle goes
    through here. Errors name the file."""
    path = os.fspath(path)
    allowed = _allowed_globals()
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        names = {a[1] if isinstance(a, tuple) else f"{a.__module__}.{a.__qualname__}" for a in allowed}
        try:
            bad = [g for g in torch.serialization.get_unsafe_globals_in_checkpoint(path) if g not in names]
        except Exception:  # legacy (non-zip) files: take the name from torch's message
            bad = []
        if not bad:
            bad = re.findall(r"GLOBAL ([\w.]+)", str(e))
        if not bad:  # not a refused type: a corrupt or foreign file
            why = re.search(r"WeightsUnpickler error:\s*(.+)", str(e))
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint "
                                  f"({why.group(1).strip() if why else 'unpickling failed'})") from None
        raise UnsafeCheckpointError(
            f"{path}: refusing to unpickle {', '.join(sorted(set(bad)))}: checkpoints are loaded with "
            "weights_only=True and may hold only tensors, containers, argparse.Namespace and numpy "
            "scalars/arrays. Nothing from the file was executed. If you trust it, re-save its state dict "
            "with plain tensors (torch.save(ckpt['model'], 'clean.pth')).") from None
    except Exception as e:  # truncated or not a checkpoint at all (torch raises many kinds here)
        why = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({why})") from None


def _read_file(path: str):
    with open(path, "rb") as f:
        magic = f.read(16)
    if len(magic) >= 9 and magic[8:9] == b"{":  # safetensors: 8-byte header length, then JSON
        try:
            return load_file(path)
        except SafetensorError as e:
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    archived = read_torchscript(path)       # TorchScript (OpenAI CLIP .pt): tensors only, no code run
    return archived if archived is not None else safe_torch_load(path)


def _hf_weights(folder: Path) -> dict:
    for name in HF_WEIGHTS:
        if (folder / name).exists():
            return _read_file(str(folder / name))
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index).exists():
            shards = sorted(set(read_json(folder / index)["weight_map"].values()))
            state = {}
            for shard in shards:
                state.update(_read_file(str(folder / shard)))
            return state
    raise MissingFileError(f"{folder}: no {' or '.join(HF_WEIGHTS)} (or sharded index) in this folder")


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def read_state(path: str | os.PathLike):
    """The raw contents of a checkpoint file, or the merged weights of a Hugging Face folder (a local
    path, or a Hub id `org/name[@revision]`: hub.py)."""
    path = resolve(path)
    if os.path.isdir(path):
        return _hf_weights(Path(path))
    return _read_file(path)


def unwrap(obj, source: str = "checkpoint") -> tuple[dict, str | None, dict]:
    """(flat tensor state, wrapper key or None, other top-level entries such as `args`)."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source}: expected a dict of tensors, found {type(obj).__name__}")
    wrapper, extras = None, {}
    if not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in WRAPPERS:
            inner = obj.get(key)
            if isinstance(inner, dict) and any(isinstance(v, torch.Tensor) for v in inner.values()):
                wrapper, extras = key, {k: v for k, v in obj.items() if k != key}
                obj = inner
                break
        else:
            raise CheckpointError(f"{source}: no state dict found; top-level keys: {sorted(map(str, obj))[:10]}; "
                                  f"expected tensors or one of the wrappers {list(WRAPPERS)}")
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    for prefix in ("module.", "_orig_mod."):       # DDP, torch.compile
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state, wrapper, extras


# ---- the format registry -------------------------------------------------------------------------
@dataclass
class Source:
    """What a format sees besides the tensors: where they came from and what came with them."""
    path: str
    wrapper: str | None = None          # the top-level key the tensors were under, if any
    extras: dict = field(default_factory=dict)   # the other top-level entries (e.g. `args`)
    hf_config: dict | None = None       # a Hugging Face folder's config.json, parsed once


@dataclass
class Converted:
    format: str
    state: dict[str, torch.Tensor]                     # aptune names -> tensors
    family: str = "videomae"                           # the backbone family the tensors belong to
    dropped: list[str] = field(default_factory=list)   # file keys deliberately not used
    unknown: list[str] = field(default_factory=list)   # file keys no rule understood
    skipped: list[str] = field(default_factory=list)   # converted keys the format says not to load
    notes: list[str] = field(default_factory=list)
    config: object | None = None                       # the backbone config the file states (HF config.json)
    class_names: list[str] | None = None               # label names the file states for its head
    source_grid: tuple[int, int, int] | None = None    # (t, h, w) token grid the file was trained on, if stated
    hints: dict = field(default_factory=dict)          # what the tensors say about the model (for messages)
    info: dict = field(default_factory=dict)           # format-specific facts shown by inspect-checkpoint
    check: Callable | None = None     # check(model, source): refuse a model the file does not fit, before loading
    finish: Callable | None = None    # finish(model, report): after loading (e.g. the file's LayerNorm eps)


@dataclass(frozen=True)
class Format:
    name: str
    description: str
    detect: Callable[[dict, Source], bool]
    convert: Callable[[dict, Source], Converted]
    priority: int


_FORMATS: dict[str, Format] = {}


def register_format(name: str, description: str, detect, convert, priority: int = 50) -> None:
    """Add a checkpoint format; formats are tried by ascending priority, the first detect() wins."""
    if name in _FORMATS:
        raise ValueError(f"checkpoint format {name!r} registered twice")
    _FORMATS[name] = Format(name, description, detect, convert, priority)


def formats() -> list[Format]:
    """Every registered format, in detection order."""
    return sorted(_FORMATS.values(), key=lambda f: f.priority)


def understood() -> str:
    return "; ".join(f"{f.name}: {f.description}" for f in formats())


def convert(state: dict[str, torch.Tensor], source: Source) -> Converted:
    """Detect the layout of `state` by its keys and convert it to aptune's names."""
    for fmt in formats():
        if fmt.detect(state, source):
            return fmt.convert(state, source)
    keys = list(state)
    shown = ", ".join(keys[:8]) + (", ..." if len(keys) > 8 else "")
    raise CheckpointError(f"unrecognised checkpoint layout ({len(keys)} tensors; keys: {shown}); "
                          f"understood formats: {understood()}")


def read_checkpoint(path: str | os.PathLike, raw=None) -> Converted:
    """Read `path` (file, Hugging Face folder or Hub id) and convert it to aptune's names; `raw`: its
    contents if already read (`read_state`)."""
    path = resolve(path)
    hf_config = None
    if os.path.isdir(path):
        cfg_path = Path(path) / "config.json"
        if not cfg_path.exists():
            raise MissingFileError(f"{cfg_path} not found: not a Hugging Face model folder")
        hf_config = read_json(cfg_path)
    state, wrapper, extras = unwrap(read_state(path) if raw is None else raw, path)
    try:
        conv = convert(state, Source(path, wrapper, extras, hf_config))
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    if wrapper:
        conv.notes.insert(0, f"weights read from the '{wrapper}' entry")
    return conv


# ---- fitting -------------------------------------------------------------------------------------
def _plain_names(model) -> tuple[set[str], set[str]]:
    """State-dict names of the plain backbone (no method) and, of those, the head modules' ones;
    built on the meta device (no memory)."""
    with torch.device("meta"):
        plain = build_backbone(model.config)
    head_ids = {id(p) for m in plain.head_modules() for p in m.parameters()}
    head = {n for n, p in plain.named_parameters() if id(p) in head_ids}
    return set(plain.state_dict()), head


def _hint_diffs(config, hints: dict) -> str:
    diffs = [f"{type(config).__name__}.{k}: model {getattr(config, k)}, checkpoint {v}" for k, v in hints.items()
             if hasattr(config, k) and k != "num_classes" and getattr(config, k) != v]
    return ("; differing fields: " + "; ".join(diffs)) if diffs else ""


def _place(model, own: dict, conv: Converted, report: dict) -> tuple[dict, list[str], list[str]]:
    """(what to load, keys with no place in the model, shape mismatches); a head of another shape or a
    head the model lacks is skipped (noted in `report`), position tables go to the backbone's own rule."""
    to_load, unexpected, bad_shape = {}, [], []
    for key, t in conv.state.items():
        if key in model.position_keys:
            fitted = model.fit_position_table(key, t, conv.source_grid, report)
            if fitted is not None:
                to_load[key] = fitted
            continue
        if key not in own:
            if key.startswith("head."):
                report["skipped"].append(key)
                report["notes"].append(f"{key} skipped: the model has no classification head (num_classes=0)")
            else:
                unexpected.append(key)
        elif own[key].shape != t.shape:
            if key.startswith("head."):
                report["skipped"].append(key)
                report["notes"].append(f"{key} skipped: checkpoint {tuple(t.shape)} vs model {tuple(own[key].shape)} "
                                       "(another number of classes); the head starts fresh")
            else:
                bad_shape.append(f"{key} {tuple(t.shape)} vs model {tuple(own[key].shape)}")
        else:
            to_load[key] = t
    return to_load, unexpected, bad_shape


def fit(model, conv: Converted, source: str = "checkpoint") -> dict:
    """Copy `conv` into `model`; returns the report. See the module docstring for the rules."""
    report = {"format": conv.format, "loaded": 0, "skipped": list(conv.skipped), "missing": [],
              "notes": list(conv.notes), "dropped": list(conv.dropped)}
    if conv.unknown:
        raise CheckpointError(f"{source}: {len(conv.unknown)} tensor(s) not understood for format {conv.format}: "
                              f"{conv.unknown[:8]}; understood formats: {understood()}")
    if conv.family != model.family:
        raise CheckpointError(f"{source}: a {conv.family} checkpoint ({conv.format}) cannot load into a "
                              f"{model.family} backbone")
    if conv.check is not None:
        conv.check(model, source)
    own = model.state_dict()
    to_load, unexpected, bad_shape = _place(model, own, conv, report)
    hints = _hint_diffs(model.config, conv.hints)
    names = ", ".join(f.name for f in formats())
    if bad_shape:
        raise CheckpointError(f"{source} ({conv.format}): shape mismatch for {bad_shape[:6]}{hints}; understood "
                              f"formats: {names}")
    if unexpected:
        raise CheckpointError(f"{source} ({conv.format}): tensors with no place in the model: {unexpected[:8]}{hints}. "
                              f"Method parameters need the same method applied first; understood formats: {names}")
    plain, head = _plain_names(model)
    missing = [k for k in own if k not in to_load]
    fresh_ok = head | set(model.position_keys)
    missing_backbone = [k for k in missing if k in plain and k not in fresh_ok]
    if missing_backbone:
        raise CheckpointError(f"{source} ({conv.format}): backbone tensors missing from the checkpoint: "
                              f"{missing_backbone[:8]}{' ...' if len(missing_backbone) > 8 else ''}{hints}; "
                              f"understood formats: {names}")
    fresh = sorted({k.split(".")[0] for k in missing if k in fresh_ok})
    if fresh:
        report["notes"].append(f"{', '.join(fresh)} not loaded: fresh init")
    if conv.finish is not None:
        conv.finish(model, report)
    model.load_state_dict(to_load, strict=False)
    report["loaded"] = len(to_load)
    report["missing"] = missing
    if conv.class_names is not None and "head.weight" in to_load:
        report["class_names"] = conv.class_names
        model.class_names = conv.class_names
    return report


# ---- entry points --------------------------------------------------------------------------------
def load_checkpoint(model, path: str | os.PathLike, strict: bool = False, conv: Converted | None = None) -> dict:
    """Load any supported checkpoint into `model` (its method, if any, already applied).

    Returns {"format", "loaded", "skipped", "missing", "notes", "dropped"} (+ "class_names" when the
    file names its classes). `strict=True` also fails when any model tensor, fc_norm, head or method
    parameters included, stays at its fresh init. `conv`: the file already read by `read_checkpoint`.
    Raises CheckpointError naming the keys or config fields at fault, and listing the formats understood.
    """
    conv = conv if conv is not None else read_checkpoint(path)
    report = fit(model, conv, os.fspath(path))
    heads = [k for k in report["skipped"] if k.startswith("head.")]
    if heads:
        warnings.warn(f"{os.fspath(path)}: classification head {heads} skipped (see the load report's notes); "
                      "it starts fresh", stacklevel=2)
    if strict and (report["missing"] or report["skipped"]):
        raise CheckpointError(f"{os.fspath(path)}: strict load, but not in the checkpoint: "
                              f"{(report['missing'] + report['skipped'])[:8]}")
    return report


def describe_checkpoint(path: str | os.PathLike, raw=None) -> dict:
    """Format, wrapper notes, config hints and key counts of a checkpoint, without a model; `raw`: its
    contents if already read (`read_state`)."""
    conv = read_checkpoint(path, raw)
    desc = {f.name: f.description for f in formats()}[conv.format]
    info = {"format": conv.format, "description": desc, "family": conv.family, "tensors": len(conv.state),
            "parameters": sum(t.numel() for t in conv.state.values()), "dropped": len(conv.dropped),
            "unknown": conv.unknown[:8], "hints": conv.hints, "notes": conv.notes, **conv.info}
    if conv.config is not None:
        info["config"] = conv.config.to_dict()
    return info
