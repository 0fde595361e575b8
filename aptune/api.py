"""The public API: create_model, count_parameters, save_adapter, load_adapter."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, replace
from pathlib import Path

import torch

from .errors import CheckpointError, ConfigError, MissingFileError
from .io import atomic_path, write_json
from .methods import apply_method, make_config
from .models.backbone import Backbone
from .models.zoo import build_backbone, config_from_dict, get_config

ADAPTER_FORMAT = "aptune-adapter"
ADAPTER_VERSION = 2     # 2: records the backbone family (version 1 files are VideoMAE)


def create_model(model="videomae-vit-b", num_classes: int | None = None,
                 num_frames: int | None = None, img_size: int | None = None,
                 checkpoint: str | os.PathLike | None = None, method: str | None = None,
                 drop_path_rate: float | None = None, head_dropout: float | None = None,
                 **method_options) -> Backbone:
    """Build a backbone (zoo name or config), apply a tuning method, load a checkpoint.

    The checkpoint may be any supported format; it is read after the method is applied, so a
    checkpoint that carries the method's own parameters (an official APT file) fills them too.
    `model` may also be a Hugging Face VideoMAE folder: its config.json gives the ViTConfig and,
    unless `checkpoint` says otherwise, its weights are loaded. The load report (format, loaded,
    skipped, missing, notes) is kept as `model.checkpoint_report`.
    """
    conv = None
    if isinstance(model, (str, os.PathLike)) and os.path.isdir(model):   # a Hugging Face folder
        from .models.checkpoints import read_checkpoint
        conv = read_checkpoint(model)
        if conv.config is None:
            raise CheckpointError(f"{model}: its config.json does not describe a backbone aptune can build")
        config = replace(conv.config)
        if checkpoint is None:
            checkpoint = model
        else:
            conv = None
    else:
        config = get_config(model) if isinstance(model, str) else replace(model)
    overrides = {k: v for k, v in dict(num_classes=num_classes, num_frames=num_frames, img_size=img_size,
                                       drop_path_rate=drop_path_rate, head_dropout=head_dropout).items()
                 if v is not None}
    config = replace(config, **overrides)
    if method is None and method_options:
        raise ConfigError(f"method options {sorted(method_options)} given without a method")
    net = build_backbone(config)
    if method is not None:
        apply_method(net, method, make_config(method, **method_options))
    if checkpoint is not None:
        from .models.checkpoints import load_checkpoint
        net.checkpoint_report = load_checkpoint(net, checkpoint, conv=conv)
    return net


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    """{"trainable": ..., "total": ...}: parameters that receive gradients, and all of them."""
    params = list(model.parameters())
    return {"trainable": sum(p.numel() for p in params if p.requires_grad),
            "total": sum(p.numel() for p in params)}


def print_trainable_parameters(model: torch.nn.Module) -> None:
    c = count_parameters(model)
    print(f"trainable params: {c['trainable']:,} || all params: {c['total']:,} "
          f"|| trainable%: {100 * c['trainable'] / max(c['total'], 1):.4f}")


def adapter_state(model: Backbone) -> dict[str, torch.Tensor]:
    """Exactly what the method trains (its parameters and the head modules), by parameter name."""
    if model.tuning is None:
        raise ConfigError("model has no method applied; nothing to save as an adapter")
    params = dict(model.named_parameters())
    return {n: params[n].detach().contiguous().cpu() for n in model.tuning.trainable_names}


def save_adapter(model: Backbone, directory: str | os.PathLike, class_names: list[str] | None = None,
                 extra: dict | None = None) -> Path:
    """Write adapter.safetensors (only what trains) and adapter.json (how to rebuild the model)."""
    from safetensors.torch import save_file
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = adapter_state(model)
    with atomic_path(directory / "adapter.safetensors") as tmp:
        save_file(state, str(tmp))
    meta = {"format": ADAPTER_FORMAT, "version": ADAPTER_VERSION, "family": model.family,
            "backbone": model.config.to_dict(), "method": model.tuning.name,
            "method_config": asdict(model.tuning.config),
            "class_names": class_names if class_names is not None else getattr(model, "class_names", None),
            **(extra or {})}
    write_json(directory / "adapter.json", meta)
    return directory


def load_adapter(directory: str | os.PathLike, checkpoint: str | os.PathLike | None = None) -> Backbone:
    """Rebuild the model saved by save_adapter: backbone from `checkpoint`, then the adapter on top."""
    from safetensors.torch import load_file
    directory = Path(directory)
    meta_path, weights_path = directory / "adapter.json", directory / "adapter.safetensors"
    for p in (meta_path, weights_path):
        if not p.exists():
            raise MissingFileError(f"{p} not found: not an aptune adapter folder")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != ADAPTER_FORMAT:
        raise CheckpointError(f"{meta_path}: field 'format' is {meta.get('format')!r}, expected {ADAPTER_FORMAT!r}")
    config = config_from_dict(meta.get("family", "videomae"), meta["backbone"])
    model = create_model(config, checkpoint=checkpoint, method=meta["method"], **meta["method_config"])
    state = load_file(str(weights_path))
    expected = set(model.tuning.trainable_names)
    if set(state) != expected:
        raise CheckpointError(f"{weights_path}: tensors do not match method {meta['method']!r}: missing "
                              f"{sorted(expected - set(state))[:5]}, unexpected {sorted(set(state) - expected)[:5]}")
    params = dict(model.named_parameters())
    for n, t in state.items():
        if params[n].shape != t.shape:
            raise CheckpointError(f"{weights_path}: {n} has shape {tuple(t.shape)}, model expects "
                                  f"{tuple(params[n].shape)}")
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t)
    model.class_names = meta.get("class_names")
    return model
