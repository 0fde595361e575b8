"""AdaptFormer (Chen et al. 2022): a bottleneck branch parallel to each selected block's MLP.

With x' the residual stream after attention (what the block's `mlp_adapter` seam receives):

    y = x' + MLP(LN2(x')) + s * up(ReLU(down(x')))       down: d -> b, up: b -> d, both with bias

`s` is a fixed scale (0.1 by default). As the authors' video code (ShoufaChen/AdaptFormer) has it:
down kaiming-uniform (a = sqrt(5), the LoRA-style init), up weight and both biases zero, so the model
starts as the plain backbone; dropout 0.1 between ReLU and up. Trains: the branches and the
backbone's head modules.
Parameters per block: 2 * d * b + b + d.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from .registry import check_int, check_layers, check_prob, register, resolve_layers, serve_rows


@dataclass
class AdaptFormerConfig:
    bottleneck: int = 64
    scale: float = 0.1
    dropout: float = 0.1              # between ReLU and up, as the authors' video code
    layers: list[int] | None = None   # block indices; None = all blocks

    def __post_init__(self):
        check_int("adaptformer", "bottleneck", self.bottleneck, 1)
        check_prob("adaptformer", "dropout", self.dropout)
        check_layers("adaptformer", self.layers)


class Adapter(nn.Module):
    """mlp_adapter seam: (x', h, layout) -> s * up(dropout(ReLU(down(x')))) (B, N, d); x' is the
    stream after attention (h = norm2(x') is not used)."""

    mixed_forward = staticmethod(serve_rows)     # many tasks on one backbone: each on its own rows

    def __init__(self, dim: int, bottleneck: int, scale: float, dropout: float):
        super().__init__()
        self.scale = scale
        self.down = nn.Linear(dim, bottleneck)
        self.act = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.up = nn.Linear(bottleneck, dim)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None, layout=None) -> torch.Tensor:
        return self.scale * self.up(self.dropout(self.act(self.down(x))))

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


@register("adaptformer", AdaptFormerConfig, "AdaptFormer: a scaled bottleneck MLP parallel to each block's MLP")
def apply(model, cfg: AdaptFormerConfig) -> list[nn.Module]:
    added = []
    for i in resolve_layers(cfg.layers, model.depth, "adaptformer"):
        blk = model.blocks[i]
        blk.mlp_adapter = Adapter(model.embed_dim, cfg.bottleneck, float(cfg.scale), cfg.dropout)
        added.append(blk.mlp_adapter)
    return added
