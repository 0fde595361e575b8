"""Checkpoints and resume.

A checkpoint (`checkpoints/step_XXXXXXXX.pt`) holds:
  model      - only what trains (`aptune.adapters.adapter_state`), or the full state for a method that
               trains the whole model (`full_state`, full fine-tuning)
  optimizer, scaler (fp16), rng (torch/numpy/python/cuda states of *every* rank, by rank),
  epoch and step_in_epoch (the data position: the next batch to consume), global_step,
  best (best validation top-1 so far), config (the resolved run config, for reference).
Files are written atomically (`aptune.io.atomic_path`) and the newest `keep_last` are kept, so a
crash mid-write leaves the previous checkpoint loadable. `latest_checkpoint` skips files that
fail to load.
"""
from __future__ import annotations

import os
import random
import re
from pathlib import Path

import numpy as np
import torch

from ..adapters import adapter_state
from ..console import warn
from ..errors import CheckpointError
from ..io import atomic_path
from ..models.checkpoints import safe_torch_load

CKPT_RE = re.compile(r"^step_(\d+)\.pt$")


def _adapter_only(model) -> bool:
    return model.tuning is not None and not model.tuning.method.full_state


def model_state(model) -> dict[str, torch.Tensor]:
    if _adapter_only(model):
        return adapter_state(model)
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def load_model_state(model, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    if _adapter_only(model):
        missing = set(model.tuning.trainable_names) - set(state)
        if missing:
            raise CheckpointError(f"checkpoint lacks trainable tensors {sorted(missing)[:5]}")
        with torch.no_grad():
            for n, t in state.items():
                params[n].copy_(t)
    else:
        model.load_state_dict(state)


def rng_state() -> dict:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state()
    return st


def set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state(st["cuda"])


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """torch.save `payload` atomically (temp file + fsync + rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint_file(path: str | os.PathLike) -> dict:
    """A training snapshot, read with the safe loader (its numpy RNG states are on the allow-list)."""
    return safe_torch_load(path)


def is_training_snapshot(payload) -> bool:
    """Whether a file's contents are one of aptune's step_*.pt snapshots."""
    return isinstance(payload, dict) and {"model", "optimizer", "global_step"} <= set(payload)


def list_checkpoints(ckpt_dir: str | os.PathLike) -> list[Path]:
    """Step checkpoints in `ckpt_dir`, oldest first."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def prune_checkpoints(ckpt_dir: str | os.PathLike, keep_last: int) -> None:
    for p in list_checkpoints(ckpt_dir)[:-keep_last]:
        p.unlink(missing_ok=True)


def latest_checkpoint(ckpt_dir: str | os.PathLike) -> tuple[Path, dict] | None:
    """The newest checkpoint that loads, as (path, payload); None if there is none. Each newer one
    that does not load (truncated, corrupt) is skipped with a warning naming it and why."""
    for p in reversed(list_checkpoints(ckpt_dir)):
        try:
            return p, load_checkpoint_file(p)
        except CheckpointError as e:  # truncated or corrupt: fall back to the previous one
            warn(f"skipping unreadable checkpoint {p}: {e}")
    return None
