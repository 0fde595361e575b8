"""Optimizer, parameter groups (weight decay, layer-wise lr decay) and the lr schedule.

Weight decay applies to trainable tensors with >= 2 dimensions (linear weights, APT/VPT prompts,
LoRA and adapter matrices), never to 1-D tensors (norms, biases), scalars, or what a module says
it must not decay through `no_weight_decay()` (timm's convention: the backbone's position tables
and class token, APT's prompt scales), following VideoMAE's rule and the APT paper's wd on prompts.
Layer ids for layer-wise decay come from the backbone's own `layer_id(name)`.

The learning rate is given per total batch of 256 and scaled linearly:
    lr = cfg.lr * batch_size * accum_steps * world_size / 256.
The schedule is per optimizer step and is the APT / VideoMAE authors' `utils.cosine_scheduler`:
warm-up `np.linspace(warmup_lr, lr, W)` over the first W steps, then cosine from lr to min_lr.
(Their `--warmup_lr` is parsed and scaled but never passed to it, so their warm-up starts at 0:
`optim.warmup_lr: 0.0` in the presets.) Each group carries `lr_scale` (layer-wise decay); the
current lr of a group is schedule(step) * lr_scale.
"""
from __future__ import annotations

import math

import torch

from ..errors import ConfigError


def scaled_lr(lr_per_256: float, batch_size: int, accum_steps: int, world_size: int) -> float:
    return lr_per_256 * batch_size * accum_steps * world_size / 256.0


def no_weight_decay_names(model: torch.nn.Module) -> set[str]:
    """Full names of the parameters that some module declares in its `no_weight_decay()`."""
    out = set()
    for prefix, m in model.named_modules():
        if hasattr(m, "no_weight_decay"):
            out |= {f"{prefix}.{n}" if prefix else n for n in m.no_weight_decay()}
    return out


def param_groups(model: torch.nn.Module, weight_decay: float, layer_decay: float = 1.0) -> list[dict]:
    """Groups of trainable parameters keyed by (decay?, layer); each with `lr_scale` and names.
    Layer ids come from `model.layer_id(name)` (0 .. depth + 1) when layer decay is on."""
    depth = len(model.blocks) if hasattr(model, "blocks") else 0
    no_decay = no_weight_decay_names(model)
    groups: dict[tuple, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = p.ndim >= 2 and name not in no_decay
        lid = model.layer_id(name) if layer_decay < 1.0 else depth + 1
        scale = layer_decay ** (depth + 1 - lid)
        g = groups.setdefault((decay, lid), {"params": [], "names": [], "lr_scale": scale,
                                             "weight_decay": weight_decay if decay else 0.0})
        g["params"].append(p)
        g["names"].append(name)
    return list(groups.values())


def build_optimizer(model: torch.nn.Module, optim_cfg, base_lr: float) -> torch.optim.Optimizer:
    groups = param_groups(model, optim_cfg.weight_decay, optim_cfg.layer_decay)
    if not groups:
        raise ConfigError("model has no trainable parameters")
    for g in groups:
        g["lr"] = base_lr * g["lr_scale"]
    if optim_cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=base_lr, betas=tuple(optim_cfg.betas))
    return torch.optim.SGD(groups, lr=base_lr, momentum=optim_cfg.momentum)


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, min_lr: float = 0.0,
          min_progress: float = 0.0, warmup_lr: float = 0.0) -> float:
    """Per-iteration schedule, the authors' cosine_scheduler: step s < W takes linspace(warmup_lr,
    base_lr, W)[s] (W = 1: warmup_lr), then step W + i takes min_lr + (base_lr - min_lr) *
    (1 + cos(pi i / (total - W))) / 2; past the end, min_lr. `min_progress` floors the cosine's progress
    (e.g. the fraction of a time budget spent, so a time-boxed run ends decayed on time)."""
    if step < warmup_steps:
        if warmup_steps == 1:
            return warmup_lr
        return warmup_lr + (base_lr - warmup_lr) * step / (warmup_steps - 1)
    span = max(total_steps - warmup_steps, 1)
    t = min(max(min(step - warmup_steps, span) / span, min_progress), 1.0)
    return min_lr + 0.5 * (base_lr - min_lr) * (1 + math.cos(math.pi * t))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
