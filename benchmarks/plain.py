"""The video ViT with APT written plainly, the way reference implementations write it.

This is the yardstick for aptune's model: same weights, same outputs, none of the speed work.
- attention is explicit: softmax((q * scale) @ k^T) @ v, the (B, H, N, N + m) matrix materialised;
- the qkv projection is `F.linear(x, weight, bias)` with the q/zero/v bias concatenated;
- prompts are copied per sample and per head (`repeat`) before joining the keys and values;
- every block runs under autograd, frozen or not (no frozen-prefix skipping), no fused kernels.

`plain_from_aptune(model)` builds it from an aptune model (base or APT) with the same weights and
the same trainable set (prompts, scales, fc_norm, head), so outputs and gradients can be compared.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class PlainPrompts(nn.Module):
    """APT key/value prompts of one block, (m, head_dim) each, with the optional scale (2, m)."""

    def __init__(self, m: int, head_dim: int, reparam: bool, dropout: float):
        super().__init__()
        self.key = nn.Parameter(torch.zeros(m, head_dim))
        self.value = nn.Parameter(torch.zeros(m, head_dim))
        self.scale = nn.Parameter(torch.ones(2, m)) if reparam else None
        self.dropout = nn.Dropout(dropout)

    def forward(self):
        k, v = self.dropout(self.key), self.dropout(self.value)
        if self.scale is not None:
            s = self.scale.clamp(min=1.0)                           # max(s, 1), (2, m)
            k, v = k * s[0].unsqueeze(1), v * s[1].unsqueeze(1)
        return k, v


class PlainBlock(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, eps: float):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.qkv_weight = nn.Parameter(torch.zeros(3 * dim, dim))
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.prompts: PlainPrompts | None = None

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv_weight, bias)                              # (B, N, 3C)
        qkv = qkv.reshape(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]                                      # (B, H, N, hd)
        if self.prompts is not None:
            pk, pv = self.prompts()                                           # (m, hd)
            pk = pk.unsqueeze(0).unsqueeze(0).repeat(B, self.heads, 1, 1)     # (B, H, m, hd)
            pv = pv.unsqueeze(0).unsqueeze(0).repeat(B, self.heads, 1, 1)
            k, v = torch.cat([k, pk], dim=2), torch.cat([v, pv], dim=2)       # (B, H, N + m, hd)
        q = q * self.head_dim ** -0.5
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)                      # (B, H, N, N + m)
        out = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class PlainViT(nn.Module):
    """Patch embedding + sin-cos positions + blocks + mean pool + fc_norm + head."""

    def __init__(self, config):
        super().__init__()
        c = config
        k = (c.tubelet_size, c.patch_size, c.patch_size)
        self.patch = nn.Conv3d(c.in_chans, c.embed_dim, kernel_size=k, stride=k)
        self.register_buffer("pos", torch.zeros(1, 1, c.embed_dim))
        hidden = int(c.embed_dim * c.mlp_ratio)
        self.blocks = nn.ModuleList(PlainBlock(c.embed_dim, c.num_heads, hidden, c.norm_eps)
                                    for _ in range(c.depth))
        fc_eps = getattr(c, "fc_norm_eps", None)
        self.fc_norm = nn.LayerNorm(c.embed_dim, eps=c.norm_eps if fc_eps is None else fc_eps)
        self.head = nn.Linear(c.embed_dim, c.num_classes) if c.num_classes > 0 else nn.Identity()

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        x = self.patch(video).flatten(2).transpose(1, 2)                       # (B, N, C)
        x = x + self.pos
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.fc_norm(x.mean(dim=1)))


def plain_from_aptune(model) -> PlainViT:
    """A PlainViT with `model`'s weights (an aptune VideoMAEViT, base or APT), in eval mode,
    with the backbone frozen and the prompts, scales, fc_norm and head trainable (APT's set).
    The position table is copied for the model's configured clip size."""
    name = model.tuning.name if model.tuning is not None else None
    if name not in (None, "apt", "linear"):
        raise ValueError(f"plain model supports the base model and APT only, not method {name!r}")
    c = model.config
    plain = PlainViT(c)
    sd = model.state_dict()
    plain.patch.load_state_dict({"weight": sd["patch_embed.proj.weight"], "bias": sd["patch_embed.proj.bias"]})
    plain.pos = model.pos_embed.detach().clone()
    for i, (pb, blk) in enumerate(zip(plain.blocks, model.blocks)):
        p = f"blocks.{i}."
        with torch.no_grad():
            pb.qkv_weight.copy_(sd[p + "attn.qkv.weight"])
            if blk.attn.q_bias is not None:
                pb.q_bias.copy_(sd[p + "attn.q_bias"])
                pb.v_bias.copy_(sd[p + "attn.v_bias"])
        for name in ("norm1", "norm2"):
            getattr(pb, name).load_state_dict(getattr(blk, name).state_dict())
        pb.proj.load_state_dict(blk.attn.proj.state_dict())
        pb.fc1.load_state_dict(blk.mlp.fc1.state_dict())
        pb.fc2.load_state_dict(blk.mlp.fc2.state_dict())
        kv = blk.kv_prompts
        if kv is not None:
            pb.prompts = PlainPrompts(kv.key.shape[0], kv.key.shape[1], kv.scale is not None, kv.dropout.p)
            pb.prompts.load_state_dict(kv.state_dict())
    plain.fc_norm.load_state_dict(model.fc_norm.state_dict())
    plain.head.load_state_dict(model.head.state_dict())
    plain.requires_grad_(False)
    for m in [plain.fc_norm, plain.head] + [b.prompts for b in plain.blocks if b.prompts is not None]:
        m.requires_grad_(True)
    return plain.eval()
