"""Visual Prompt Tuning (Jia et al. 2022), on any backbone (VideoMAE's ViT has no class token).

m learnable prompt tokens of width d join the token sequence right after the class tokens (if any)
before a block (the block's `tokens_in` seam) and leave it after a block (`tokens_out`); the
`TokenLayout` passed on counts them, so later seams know where the patch tokens start:

    deep    (default) every selected block has its own prompts: [cls; P_l; x] -> block -> drop P_l
    shallow one set of prompts enters before the first selected block, travels through the
            following blocks (their outputs at the prompt positions feed the next block) and is
            removed after the last selected block; `layers` must then be a contiguous range.

Prompts carry no position embedding and pay the full block cost (attention and MLP). Pooling
happens after they are removed, so the head sees the video tokens only. Init: uniform(-a, a)
with a = sqrt(6 / (3 * patch * patch + d)). Trains: the prompts, fc_norm and the head.
Parameters: m * d per prompted block (deep) or m * d in total (shallow).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..models.layers import uniform_prompt_bound
from .registry import check_int, check_layers, check_prob, register, resolve_layers


@dataclass
class VPTConfig:
    num_prompts: int = 50
    deep: bool = True
    prompt_dropout: float = 0.0
    layers: list[int] | None = None   # block indices; None = all blocks (shallow: a contiguous range)

    def __post_init__(self):
        check_int("vpt", "num_prompts", self.num_prompts, 0)
        check_prob("vpt", "prompt_dropout", self.prompt_dropout)
        check_layers("vpt", self.layers)


class PrependPrompts(nn.Module):
    """tokens_in seam: x (B, c + N, d) -> [cls; P; x] (B, c + m + N, d), P the block's prompts (m, d),
    c = layout.prefix class tokens."""

    def __init__(self, num_prompts: int, dim: int, bound: float, dropout: float):
        super().__init__()
        self.prompts = nn.Parameter(torch.empty(num_prompts, dim).uniform_(-bound, bound))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, layout):
        # a copy, not an expanded view: under no_grad a view of a parameter still claims
        # requires_grad without a grad_fn, which breaks module hooks (FlopCounterMode's tracker)
        p = self.dropout(self.prompts.to(x.dtype).repeat(x.shape[0], 1, 1))      # (B, m, d), a mask per sample
        c = layout.prefix
        x = torch.cat((x[:, :c], p, x[:, c:]), dim=1) if c else torch.cat((p, x), dim=1)   # (B, c + m + N, d)
        return x, layout.with_prompts(self.prompts.shape[0])

    def extra_repr(self) -> str:
        return f"num_prompts={self.prompts.shape[0]}, dim={self.prompts.shape[1]}"


class RemovePrompts(nn.Module):
    """tokens_out seam: (B, c + m + N, d) -> (B, c + N, d), dropping the m prompt tokens after the
    c = layout.prefix class tokens."""

    def __init__(self, num_prompts: int):
        super().__init__()
        self.num_prompts = num_prompts

    def forward(self, x: torch.Tensor, layout):
        c, m = layout.prefix, self.num_prompts
        x = torch.cat((x[:, :c], x[:, c + m:]), dim=1) if c else x[:, m:]
        return x, layout.with_prompts(-m)

    def extra_repr(self) -> str:
        return f"num_prompts={self.num_prompts}"


@register("vpt", VPTConfig, "Visual Prompt Tuning: learnable tokens prepended before blocks (deep or shallow)")
def apply(model, cfg: VPTConfig) -> list[nn.Module]:
    layers = resolve_layers(cfg.layers, model.depth, "vpt", contiguous=not cfg.deep)
    d = model.embed_dim
    bound = uniform_prompt_bound(model.patch_size, d, model.in_chans)
    m = cfg.num_prompts
    if cfg.deep:
        added = []
        for i in layers:
            blk = model.blocks[i]
            blk.tokens_in = PrependPrompts(m, d, bound, cfg.prompt_dropout)
            blk.tokens_out = RemovePrompts(m)
            added.append(blk.tokens_in)
        return added
    first, last = model.blocks[layers[0]], model.blocks[layers[-1]]
    first.tokens_in = PrependPrompts(m, d, bound, cfg.prompt_dropout)
    last.tokens_out = RemovePrompts(m)
    return [first.tokens_in]
