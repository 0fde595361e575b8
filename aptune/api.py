"""The public API: create_model, count_parameters, print_trainable_parameters (adapter files: adapters.py)."""
from __future__ import annotations

import os
from dataclasses import replace

import torch

from .adapters import adapter_state, load_adapter, save_adapter  # noqa: F401  (public API)
from .errors import CheckpointError, ConfigError
from .methods import apply_method, make_config
from .models.backbone import Backbone
from .models.zoo import build_backbone, get_config


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
        net.checkpoint_path = os.fspath(checkpoint)     # recorded by save_adapter
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
