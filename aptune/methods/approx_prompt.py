"""Approximated Prompt Tuning (Wu et al. 2023, arXiv 2306.15706), on the video ViT.

Prompts do not join global attention; their effect is approximated by a cheap step added to
each selected block's attention output (the block's `attn_adapter` seam, which receives the
attention input h = LN1(x) and the attention output a, both (B, N, d)):

    P' = P + P Wa Wb                 (m, d)       P (m, d), Wa (d, r), Wb (r, d)
    A  = dropout(ReLU(h P'^T))       (B, N, m)
    g  = max_j A[..., j], detached   (B, N, 1)    one gain per token
    a' = exp(s) * (a + (A P) * g)    (B, N, d)    s a learnable scalar

As the authors' code has it (DoubtedSteam/APT, `approximate_prompt`; their `mm` is
Linear(d, r, bias=False) then Linear(r, d, bias=False), so Wa, Wb are those weights transposed):
the max is taken per token over the prompts, from the same (dropped-out) A that multiplies P,
and carries no gradient; a' is formed after the output projection, before the output dropout.
Init: P ~ N(0, 0.02), Wa ~ N(0, 1), Wb = 0 (so P' = P at the start), s = 0; dropout on A is the
backbone's attention dropout in their runs (0.0), so 0 here unless asked. m = 50 in their ViLT
vision layers, 200 in METER's text layers. With P = 0 the block is exactly the plain block
(A = 0, exp(0) = 1). Cost per block O(N m d): no attention over N + m tokens and no MLP on
prompts. Nothing depends on the token grid, so it works for any tubelet/frame count (also T = 1).
Trains: P, Wa, Wb, s and the backbone's head modules. Parameters per block: m*d + 2*r*d + 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import check_int, check_layers, check_prob, register, resolve_layers, serve_rows


@dataclass
class ApproxPromptConfig:
    num_prompts: int = 200
    rank: int = 4                     # rank of the low-rank prompt transform Wa Wb (0: none)
    dropout: float = 0.0              # dropout on the prompt activations A (the authors': attention dropout, 0)
    layers: list[int] | None = None   # block indices; None = all blocks

    def __post_init__(self):
        check_int("approx_prompt", "num_prompts", self.num_prompts, 0)
        check_int("approx_prompt", "rank", self.rank, 0)
        check_prob("approx_prompt", "dropout", self.dropout)
        check_layers("approx_prompt", self.layers)


class ApproxPrompt(nn.Module):
    """attn_adapter seam: (h, a, layout) -> a', both (B, N, d); formula in this module's docstring."""

    mixed_forward = staticmethod(serve_rows)     # many tasks on one backbone: each on its own rows

    def __init__(self, dim: int, num_prompts: int, rank: int, dropout: float = 0.0):
        super().__init__()
        self.prompts = nn.Parameter(torch.randn(num_prompts, dim) * 0.02)  # P  (m, d), N(0, 0.02)
        self.down = nn.Parameter(torch.randn(dim, rank))                   # Wa (d, r), N(0, 1)
        self.up = nn.Parameter(torch.zeros(rank, dim))                     # Wb (r, d), zero: P' = P at init
        self.log_scale = nn.Parameter(torch.zeros(()))                     # s, a' is scaled by exp(s)
        self.dropout = nn.Dropout(dropout)

    def no_weight_decay(self) -> set[str]:
        return {"log_scale"}

    def forward(self, h: torch.Tensor, a: torch.Tensor, layout=None) -> torch.Tensor:
        if self.prompts.shape[0] == 0:                                # m = 0: no prompts, only exp(s)
            return torch.exp(self.log_scale).to(a.dtype) * a
        P = self.prompts.to(h.dtype)
        P2 = P + (P @ self.down.to(h.dtype)) @ self.up.to(h.dtype)    # P' (m, d)
        A = self.dropout(F.relu(F.linear(h, P2)))                     # (B, N, m)
        g = A.detach().amax(dim=-1, keepdim=True)                     # (B, N, 1), no gradient
        out = a + (A @ P).to(a.dtype) * g.to(a.dtype)                 # (B, N, d)
        return torch.exp(self.log_scale).to(a.dtype) * out

    def extra_repr(self) -> str:
        return f"num_prompts={self.prompts.shape[0]}, dim={self.prompts.shape[1]}, rank={self.down.shape[1]}"


@register("approx_prompt", ApproxPromptConfig,
          "Approximated Prompt Tuning: prompt effect approximated by a cheap step on each attention output")
def apply(model, cfg: ApproxPromptConfig) -> list[nn.Module]:
    added = []
    for i in resolve_layers(cfg.layers, model.depth, "approx_prompt"):
        blk = model.blocks[i]
        blk.attn_adapter = ApproxPrompt(model.embed_dim, cfg.num_prompts, cfg.rank, cfg.dropout)
        added.append(blk.attn_adapter)
    return added
