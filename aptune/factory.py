"""Building a model: `create_model` (a zoo name, config or checkpoint; a method; weights), the token
layout a config asks for, and the parameter counts PEFT users expect. The public face is api.py."""
from __future__ import annotations

import os
from dataclasses import replace

import torch

from .errors import CheckpointError, ConfigError
from .hub import is_hub_id, resolve
from .methods import apply_method, make_config
from .methods.registry import LAYOUTS
from .models.backbone import Backbone
from .models.checkpoints import load_checkpoint, read_checkpoint
from .models.zoo import build_backbone, family_of, get_config, get_family, is_model


def create_model(model="videomae-vit-b", num_classes: int | None = None,
                 num_frames: int | None = None, img_size: int | None = None,
                 checkpoint: str | os.PathLike | None = None, method: str | None = None,
                 drop_path_rate: float | None = None, head_dropout: float | None = None,
                 layout: str | None = None, **method_options) -> Backbone:
    """Build a backbone (zoo name or config), apply a tuning method, load a checkpoint.

    The checkpoint may be any supported format; it is read after the method is applied, so a
    checkpoint that carries the method's own parameters (an official APT file) fills them too.
    `checkpoint` (and `model`) may be a Hugging Face Hub id, `org/name[@revision]` (hub.py).
    `model` may also be a checkpoint: a Hugging Face folder (its config.json gives the config) or
    a file whose format states the architecture (CLIP, timm and HF ViT state dicts, OpenAI's
    TorchScript archives: inferred from the tensor shapes); unless `checkpoint` says otherwise, its
    weights are loaded. `layout`: the token layout, "frames" or "joint" (None: the backbone's
    default; image ViTs have both, VideoMAE only joint). The load report (format, loaded,
    skipped, missing, notes) is kept as `model.checkpoint_report`.
    """
    conv = None
    if _is_checkpoint_path(model):
        conv = read_checkpoint(model)
        if conv.config is None:
            what = "its config.json does not describe" if os.path.isdir(resolve(model)) else \
                f"the file ({conv.format}) does not state the architecture of"
            raise CheckpointError(f"{model}: {what} a backbone aptune can build; pass a zoo model name as model "
                                  "and this path as checkpoint=")
        config = replace(conv.config)
        if checkpoint is None:
            checkpoint = model
        else:
            conv = None
    else:
        config = get_config(model) if isinstance(model, str) else replace(model)
    config, _ = resolve_layout(config, layout)
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
        net.checkpoint_report = load_checkpoint(net, checkpoint, conv=conv)
        net.checkpoint_path = os.fspath(checkpoint)     # recorded by save_adapter
    return net


def resolve_layout(config, layout: str | None = None) -> tuple[object, str]:
    """(config with `layout` applied, the token layout its backbone has). A family whose config has
    no `layout` field (VideoMAE) has only its backbone's layout; asking for another is a ConfigError
    naming both."""
    if layout is not None and layout not in LAYOUTS:
        raise ConfigError(f"layout {layout!r}: must be one of {', '.join(LAYOUTS)}")
    if hasattr(config, "layout"):
        config = config if layout is None else replace(config, layout=layout)
        return config, config.layout
    family = family_of(config)
    fixed = get_family(family).backbone.layout
    if layout is not None and layout != fixed:
        raise ConfigError(f"layout {layout!r}: the {family} backbone has only the {fixed!r} token layout")
    return config, fixed


def _is_checkpoint_path(model) -> bool:
    """A folder, a file that is not also a zoo name, or a Hub id (`org/name[@revision]`)."""
    if not isinstance(model, (str, os.PathLike)):
        return False
    return os.path.isdir(model) or (os.path.isfile(model) and not is_model(os.fspath(model))) or is_hub_id(model)


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    """{"trainable": ..., "total": ...}: parameters that receive gradients, and all of them."""
    params = list(model.parameters())
    return {"trainable": sum(p.numel() for p in params if p.requires_grad),
            "total": sum(p.numel() for p in params)}


def print_trainable_parameters(model: torch.nn.Module) -> None:
    c = count_parameters(model)
    print(f"trainable params: {c['trainable']:,} || all params: {c['total']:,} "
          f"|| trainable%: {100 * c['trainable'] / max(c['total'], 1):.4f}")
