"""What every export format shares: the model made ready to trace, the clip it is traced with, the
description written into each artifact, the check of an artifact's logits against aptune's, and
putting the files in place only once that check passed.

Ready to trace (`prepare`): eval mode, so dropout, prompt dropout (APT's one mask per batch, VPT's)
and drop-path are off, and no data-dependent branch on the training flag is left; nothing requires
grad and tracing runs under no_grad, so `Backbone.forward_features` takes no frozen-prefix shortcut (it
is taken only under autograd) and the graph holds no grad-mode switches. The position table is the
one of the configured clip (VideoMAE's sin-cos buffer, an image ViT's learned table): a constant of
the graph, which therefore takes that clip size only; the batch dimension is dynamic.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..adapters import clip_record
from ..errors import ExportError

TOLERANCE = 1e-4           # max |logit difference| allowed, relative to the largest |logit| (at least 1e-3)
INPUT, OUTPUT = "video", "logits"


@dataclass
class Exported:
    """What an export wrote and how it was checked."""
    format: str
    paths: list[Path]
    check: str                                   # e.g. "onnxruntime: max |diff| 3.1e-07 on 3 random clips"
    notes: list[str] = field(default_factory=list)


def prepare(model: torch.nn.Module) -> torch.nn.Module:
    """The model in eval mode with nothing requiring grad (see the module docstring)."""
    return model.eval().requires_grad_(False)


def example_clip(model, batch: int, seed: int = 0) -> torch.Tensor:
    """A random clip batch (batch, C, T, S, S) of the model's configured clip."""
    c = model.config
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, c.in_chans, c.num_frames, c.img_size, c.img_size, generator=g)


def batch_dim():
    """The dynamic batch dimension, named "batch" in the exported graph."""
    return torch.export.Dim("batch", min=1, max=1 << 16)


def reference(model, batch: int = 3, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(clip, aptune's logits) for the check: a batch size other than the traced one, so a batch
    dimension that was fixed by mistake shows."""
    x = example_clip(model, batch, seed)
    with torch.no_grad():
        return x, model(x)


def check_logits(want: torch.Tensor, got, what: str) -> str:
    """A one-line account of the check; ExportError when `got` is not aptune's logits."""
    got = torch.as_tensor(got, dtype=torch.float32)
    if tuple(got.shape) != tuple(want.shape):
        raise ExportError(f"{what}: logits of shape {tuple(got.shape)}, aptune's are {tuple(want.shape)}")
    diff = (got - want).abs().max().item()
    # relative, so that a model whose logits are all small (an untrained head: VideoMAE scales it by 1e-3)
    # is checked as closely as a trained one; an export answering zeros fails
    tol = TOLERANCE * max(1e-3, want.abs().max().item())
    if not diff <= tol:                                            # NaN fails too
        raise ExportError(f"{what}: logits differ from aptune's by {diff:.3g} (tolerance {tol:.1g}) on "
                          f"{want.shape[0]} random clips; nothing was written")
    return f"{what}: max |diff| {diff:.2g} against aptune's logits on {want.shape[0]} random clips"


def describe(model) -> dict:
    """What a deployment needs to know, stored in every artifact (ONNX metadata `aptune`, the torch
    program's extra file `aptune.json`): the input it takes, its normalisation, the class names."""
    meta = getattr(model, "adapter_meta", None) or {}
    c = model.config
    tuning = model.tuning
    return {
        "format": "aptune-export", "version": 1, "family": model.family, "backbone": c.to_dict(),
        "method": tuning.name if tuning else None,
        "method_config": asdict(tuning.config) if tuning else None,
        "class_names": getattr(model, "class_names", None),
        "clip": meta.get("clip") or clip_record(model),
        "input": {"name": INPUT, "shape": ["batch", c.in_chans, c.num_frames, c.img_size, c.img_size],
                  "dtype": "float32", "meaning": "clips (batch, channels, frames, height, width), RGB / 255 "
                  "normalised with clip.mean and clip.std"},
        "output": {"name": OUTPUT, "shape": ["batch", c.num_classes], "dtype": "float32"},
    }


def describe_json(model) -> str:
    return json.dumps(describe(model))


@contextmanager
def quiet():
    """Silence the exporters' chatter (deprecation warnings, optional operators they skip)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


@contextmanager
def staged(path: str | os.PathLike):
    """Yield a temporary folder beside `path`; write the artifact there under its final name (with
    any side files, such as ONNX external data). On success every file moves into `path`'s folder,
    side files first, so a reader never sees the main file without them; on failure nothing is left."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        files = sorted(tmp.iterdir(), key=lambda p: p.name == path.name)   # the main file last
        for f in files:
            os.replace(f, path.parent / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def require(module: str, extra: str = "export"):
    """Import an optional dependency, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ExportError(f"this export needs the package {module!r} ({e}); install it with "
                          f"pip install 'aptune[{extra}]'") from None
