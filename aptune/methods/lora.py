"""LoRA (Hu et al. 2021) on the linear projections of selected blocks.

Each target Linear (W, b) of a selected block becomes a `LoRALinear` computing

    y = W x + b + (alpha / r) * B A dropout(x)        A: (r, in), B: (out, r)

A starts random (kaiming-uniform, a = sqrt(5)) and B at zero, so the model starts as the
plain backbone. Targets: "qkv" (the fused attention input projection; the attention still adds
its q/v biases after calling `self.qkv(x)`), "proj" (attention output), "fc1", "fc2" (MLP).

`LoRALinear` is an `nn.Linear` that keeps the frozen base weight and bias under their usual names
(`...attn.qkv.weight`), so backbone checkpoints load unchanged; the low-rank pair lives in its
child `lora` (`...attn.qkv.lora.A`, `...lora.B`). Only those children train: they are what `apply`
returns. `merge_lora(model)` folds (alpha / r) B A into W for inference. Many tasks on one backbone
(`LoRALinear.mixed_forward`): W x + b once for the batch, each task's B A on its own rows.
Parameters per target: r * (in + out); qkv of ViT-B: 8 * (768 + 2304) = 24,576 per block.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from .registry import check_int, check_layers, check_prob, register, resolve_layers

TARGETS = {"qkv": ("attn", "qkv"), "proj": ("attn", "proj"), "fc1": ("mlp", "fc1"), "fc2": ("mlp", "fc2")}


@dataclass
class LoRAConfig:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("qkv",)   # any of "qkv", "proj", "fc1", "fc2"
    layers: list[int] | None = None        # block indices; None = all blocks

    def __post_init__(self):
        check_int("lora", "rank", self.rank, 1)
        check_prob("lora", "dropout", self.dropout)
        check_layers("lora", self.layers)
        targets = [self.targets] if isinstance(self.targets, str) else list(self.targets)
        bad = [t for t in targets if t not in TARGETS]
        if bad or not targets:
            raise ConfigError(f"lora.targets: {bad or targets} not allowed; choose from {sorted(TARGETS)}")
        self.targets = tuple(sorted(set(targets), key=list(TARGETS).index))


class LoRAUpdate(nn.Module):
    """The trainable low-rank update: x (..., in) -> (alpha / r) * B A dropout(x) (..., out)."""

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float, dropout: float):
        super().__init__()
        self.scaling = alpha / rank
        self.A = nn.Parameter(torch.empty(rank, in_features))
        self.B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout)

    def delta_weight(self) -> torch.Tensor:
        """(alpha / r) B A: the (out, in) matrix this update adds to W."""
        return self.scaling * (self.B @ self.A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.linear(self.dropout(x), self.A.to(x.dtype))       # (..., r)
        return self.scaling * F.linear(h, self.B.to(x.dtype))   # (..., out)

    def extra_repr(self) -> str:
        return f"rank={self.A.shape[0]}, scaling={self.scaling:g}"


class LoRALinear(nn.Linear):
    """A frozen Linear plus a LoRA update; same parameter names as the Linear it replaces."""

    def __init__(self, base: nn.Linear, lora: LoRAUpdate):
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight          # the same Parameter objects as the base Linear
        self.bias = base.bias
        self.lora = lora

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + self.lora(x)

    @staticmethod
    def mixed_forward(batch, tasks: dict, plain, x: torch.Tensor) -> torch.Tensor:
        """A mixed batch (methods/registry.py): the shared frozen Linear once on every row, then each task's
        update on its own rows."""
        y = plain(x)                                                # (S, N, out)
        ids = batch.ids(x.shape[0])
        for i, mod in tasks.items():
            rows = ids == i
            y[rows] = y[rows] + mod.lora(x[rows])
        return y

    def merged(self) -> nn.Linear:
        """A plain Linear with W + (alpha / r) B A (and the same bias): the same function, no dropout."""
        out = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(self.weight + self.lora.delta_weight().to(self.weight.dtype))
            if self.bias is not None:
                out.bias.copy_(self.bias)
        out.requires_grad_(False)
        return out


@register("lora", LoRAConfig, "LoRA: low-rank updates B A on the attention (and optionally MLP) projections")
def apply(model, cfg: LoRAConfig) -> list[nn.Module]:
    added = []
    for i in resolve_layers(cfg.layers, model.depth, "lora"):
        for t in cfg.targets:
            parent_name, child_name = TARGETS[t]
            parent = getattr(model.blocks[i], parent_name)
            base = getattr(parent, child_name)
            if isinstance(base, LoRALinear):
                raise ConfigError(f"lora.targets: block {i} {t} already has LoRA")
            lora = LoRAUpdate(base.in_features, base.out_features, cfg.rank, float(cfg.alpha), cfg.dropout)
            lora.to(device=base.weight.device)
            setattr(parent, child_name, LoRALinear(base, lora))
            added.append(lora)
    return added


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA update into its base weight (in place) for inference; returns the model.

    Afterwards the model holds plain Linears again and no LoRA parameters; save the adapter
    (`aptune.save_adapter`) before merging if you want to keep it."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                setattr(parent, name, child.merged())
    if getattr(model, "tuning", None) is not None:
        names = {n for n, _ in model.named_parameters()}
        model.tuning.trainable_names = [n for n in model.tuning.trainable_names if n in names]
    return model
