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
Many tasks on one backbone (`mixed_forward`): one prompt area as wide as the batch's longest, each sequence's
unused slots masked as keys; deep and shallow tasks mix, since a sequence only ever holds its own prompts.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

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

    @staticmethod
    def mixed_forward(batch, tasks: dict, plain, x: torch.Tensor, layout):
        """A mixed batch (methods/registry.py): each sequence's prompts join a prompt area right after the
        class tokens, as wide as the batch's longest; slots a sequence does not use are masked as keys
        (`layout.key_mask`)."""
        S, L, C = x.shape
        ids = batch.ids(S)
        W = max(mod.prompts.shape[0] for mod in tasks.values())
        area, valid = x.new_zeros(S, W, C), torch.zeros(S, W, dtype=torch.bool, device=x.device)
        for i, mod in tasks.items():
            rows, m = ids == i, mod.prompts.shape[0]
            area[rows, :m], valid[rows, :m] = mod.prompts.to(x.dtype), True      # eval: no prompt dropout
        c = layout.prefix
        mask = layout.key_mask if layout.key_mask is not None else x.new_ones(S, L, dtype=torch.bool)
        x = torch.cat((x[:, :c], area, x[:, c:]), dim=1)                        # (S, L + W, C)
        mask = torch.cat((mask[:, :c], valid, mask[:, c:]), dim=1)
        return x, replace(layout, prompts=layout.prompts + W, key_mask=None if bool(mask.all()) else mask)

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

    @staticmethod
    def mixed_forward(batch, tasks: dict, plain, x: torch.Tensor, layout):
        """A mixed batch: the sequences of the tasks whose prompts leave here mark the prompt area unused (a
        sequence holds only its own task's prompts); area columns no sequence uses any more are dropped, and
        the key mask with them once nothing is padding."""
        ids = batch.ids(x.shape[0])
        c, W = layout.prefix, layout.prompts
        mask = layout.key_mask.clone() if layout.key_mask is not None else x.new_ones(x.shape[:2], dtype=torch.bool)
        for i in tasks:
            mask[ids == i, c:c + W] = False
        keep = torch.cat((x.new_ones(c, dtype=torch.bool), mask[:, c:c + W].any(0),
                          x.new_ones(mask.shape[1] - c - W, dtype=torch.bool)))
        x, mask = x[:, keep], mask[:, keep]
        return x, replace(layout, prompts=W - int((~keep).sum()), key_mask=None if bool(mask.all()) else mask)

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
