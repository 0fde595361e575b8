"""Rebuilding a model from an adapter folder (adapter_files.py: what the folder holds, how it is written):
`load_adapter`, and `from_pretrained` (PEFT's name for it). The folder's own functions are handed on
here too, so `aptune.adapters` stays the one place to look.

`load_adapter` uses the checkpoint it is given, else the recorded one if the file is there; it refuses
to build on a random backbone unless asked (`allow_random_backbone=True`, a warning), and refuses
weights whose fingerprint differs from the recorded one unless asked (`allow_other_backbone=True`).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from .adapter_files import (  # noqa: F401  (handed on: aptune.adapters is where users look)
    ADAPTER_FORMAT,
    ADAPTER_VERSION,
    META,
    WEIGHTS,
    adapter_family,
    adapter_folder,
    adapter_state,
    backbone_fingerprint,
    backbone_record,
    clip_record,
    push_to_hub,
    read_adapter_meta,
    read_weights,
    record_results,
    recorded_backbone,
    save_adapter,
    save_pretrained,
)
from .console import warn
from .errors import CheckpointError, MissingFileError
from .factory import create_model
from .methods import get_method
from .models.zoo import config_from_dict


def load_adapter(directory: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
                 allow_random_backbone: bool = False, allow_other_backbone: bool = False):
    """Rebuild the model saved by save_adapter: the backbone from `checkpoint` (default: the one the
    adapter records, if the file is there), then the adapter on top. `directory` may be a Hub id of an
    adapter repository (hub.py). See the module docstring."""
    directory = adapter_folder(directory)
    meta = read_adapter_meta(directory)
    config = config_from_dict(meta["family"], meta["backbone"])
    full = get_method(meta["method"]).full_state
    rec = meta.get("backbone_weights") or {}
    seed = None
    if checkpoint is None and not full:
        checkpoint = recorded_backbone(meta)
        if checkpoint is None:
            seed = rec.get("random_seed") if rec.get("path") is None else None
            if not allow_random_backbone:
                raise MissingFileError(_no_backbone_message(directory, rec))
            warn(f"{directory}: building on a random backbone"
                 + (f" (the recorded seed {seed}, as in training)" if seed is not None else
                    f": the recorded backbone {rec.get('path')!r} is not there, so predictions are meaningless"))
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = create_model(config, checkpoint=checkpoint, method=meta["method"], **meta["method_config"])
    fill_adapter(model, directory / WEIGHTS, meta["method"])
    if not full and rec.get("fingerprint") and (checkpoint is not None or seed is not None):
        got = backbone_fingerprint(model)
        if got != rec["fingerprint"] and not allow_other_backbone:
            raise CheckpointError(f"{directory}: the backbone {checkpoint or f'random seed {seed}'} is not the one "
                                  f"this adapter was trained on ({rec.get('path') or 'a random init'}): fingerprint "
                                  f"{got[:19]} vs recorded {rec['fingerprint'][:19]}; pass the right checkpoint, or "
                                  "allow_other_backbone=True (--allow-other-backbone) to use it anyway")
    model.class_names = meta.get("class_names")
    model.adapter_meta = meta
    model.backbone_record = rec or None
    return model


def _no_backbone_message(directory: Path, rec: dict) -> str:
    if rec.get("path"):
        return (f"{directory}: trained on the backbone {rec['path']!r} ({rec.get('resolved')}), which is not there; "
                "pass checkpoint= (--checkpoint) with that file, or allow_random_backbone=True (--random-backbone) "
                "to run on a random init")
    if rec.get("random_seed") is not None:
        return (f"{directory}: trained on a random backbone (seed {rec['random_seed']}); pass "
                "allow_random_backbone=True (--random-backbone) to rebuild that random init")
    return (f"{directory}: the adapter does not record its backbone; pass checkpoint= (--checkpoint) with the "
            "weights it was trained on, or allow_random_backbone=True (--random-backbone)")


def fill_adapter(model, weights_path: Path, method: str) -> None:
    """Copy adapter.safetensors into `model` (its method applied): exactly its trained tensors, by name and shape."""
    state = read_weights(weights_path)
    expected = set(model.tuning.trainable_names)
    if set(state) != expected:
        raise CheckpointError(f"{weights_path}: tensors do not match method {method!r}: missing "
                              f"{sorted(expected - set(state))[:5]}, unexpected {sorted(set(state) - expected)[:5]}")
    params = dict(model.named_parameters())
    for n, t in state.items():
        if params[n].shape != t.shape:
            raise CheckpointError(f"{weights_path}: {n} has shape {tuple(t.shape)}, model expects "
                                  f"{tuple(params[n].shape)}")
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t)


def from_pretrained(directory_or_id: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
                    allow_random_backbone: bool = False, allow_other_backbone: bool = False):
    """PEFT's name for `load_adapter`: an adapter folder or Hub id, on `checkpoint` (default: the backbone
    it records, a Hub id at its recorded commit included)."""
    return load_adapter(directory_or_id, checkpoint, allow_random_backbone, allow_other_backbone)
