"""Building blocks of the ViT backbones: token layout, patch embedding, attention, MLP, block.

The blocks know nothing about any tuning method. They expose *seams* that a method fills with
its own modules (all default to None, which gives the plain pre-norm block). Every seam gets the
`TokenLayout` of the sequence it sees (where the class tokens, prompts and patch tokens are, and
the patch-token grid):

    Block.tokens_in     (x, layout) -> (x', layout')  before the block (VPT joins prompt tokens)
    Block.pre_attn      (x, layout) -> x'             the residual stream before attention
                                                        (an adapter adds its own residual: ST-Adapter)
    Block.kv_prompts    (layout) -> (k, v[, mask])    extra keys/values joined to attention (APT),
                                                        each (m, head_dim) or broadcastable to
                                                        (B, H, m, head_dim); mask (B, m) bool, False =
                                                        padding that takes no softmax mass
    Block.attn_adapter  (h, a, layout) -> a'          rewrites the attention output a, given its input
                                                        h = norm1(x) (Approximated Prompt Tuning)
    Block.pre_mlp       (x, layout) -> x'             the residual stream after attention, before the MLP
    Block.mlp_adapter   (x, h, layout) -> delta       a branch parallel to the MLP, given the stream x and
                                                        h = norm2(x) (AdaptFormer reads x, AIM reads h)
    Block.tokens_out    (x, layout) -> (x', layout')  after the block (VPT removes prompt tokens)
    Block.wrap          (block, x, layout) -> (x', layout')
                        takes over the whole block: a method that must run the frozen parts in
                        another order (AIM runs the attention twice) puts its module here. The
                        block's own children keep their names (`blocks.3.attn.qkv.weight`), the
                        wrap's parameters live under `blocks.3.wrap.*`, so backbone checkpoints and
                        adapter files keep working; `Block.attention` / `Block.feed_forward` are
                        the pieces a wrap calls.

Every projection is called as a submodule (`self.qkv(x)`), so wrappers such as LoRA that replace
`attn.qkv` (keeping its parameter names) take effect.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class TokenLayout:
    """What the token axis of a (S, L, C) sequence batch holds.

    frames:  frames per clip of the input video
    grid:    (t, h, w) grid of the patch tokens of ONE sequence
    prefix:  class tokens at the start of each sequence
    prompts: prompt tokens right after the prefix (VPT)
    folded:  frames are folded into the batch axis: S = clips * frames and each sequence is one
             frame (grid (1, h, w)); otherwise S = clips
    key_mask: None, or (S, L) bool: False marks padding tokens no query may attend to (prompts of
             different lengths in a mixed-task batch, aptune.multitask); None = every token is real
    Sequence order: [prefix | prompts | patches (t, h, w)].
    """
    frames: int
    grid: tuple[int, int, int]
    prefix: int = 0
    prompts: int = 0
    folded: bool = False
    key_mask: torch.Tensor | None = field(default=None, compare=False, repr=False)

    @property
    def num_patches(self) -> int:
        t, h, w = self.grid
        return t * h * w

    @property
    def patch_start(self) -> int:
        return self.prefix + self.prompts

    @property
    def length(self) -> int:
        return self.patch_start + self.num_patches

    def with_prompts(self, m: int) -> "TokenLayout":
        """The layout after m prompt tokens joined (m < 0: left) the sequence."""
        return replace(self, prompts=self.prompts + m)

    def patch_grid(self, patches: torch.Tensor) -> torch.Tensor:
        """Patch tokens (S, N, C) -> (clips, C, T, h, w), the frames of a folded batch unfolded."""
        t, h, w = self.grid
        S, _, C = patches.shape
        if self.folded:
            x = patches.reshape(S // self.frames, self.frames, h, w, C)        # (B, T, h, w, C)
        else:
            x = patches.reshape(S, t, h, w, C)
        return x.permute(0, 4, 1, 2, 3)

    def from_grid(self, grid: torch.Tensor) -> torch.Tensor:
        """Inverse of `patch_grid`: (clips, C, T, h, w) -> patch tokens (S, N, C)."""
        B, C = grid.shape[:2]
        x = grid.permute(0, 2, 3, 4, 1)                                         # (B, T, h, w, C)
        if self.folded:
            return x.reshape(B * self.frames, -1, C)
        return x.reshape(B, -1, C)


def sinusoid_table(n_position: int, dim: int) -> torch.Tensor:
    """VideoMAE's fixed sin-cos table over flattened token positions: (1, n_position, dim)."""
    pos = torch.arange(n_position, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)[None, :]
    angle = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / dim)
    table = torch.empty(n_position, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle[:, 0::2])
    table[:, 1::2] = torch.cos(angle[:, 1::2])
    return table.float().unsqueeze(0)


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class PatchEmbed(nn.Module):
    """Tubelet embedding: Conv3d with kernel = stride = (tubelet, patch, patch)."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, tubelet_size: int, bias: bool = True):
        super().__init__()
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        k = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=k, stride=k, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)                        # (B, C, T/t, H/p, W/p)
        return x.flatten(2).transpose(1, 2)     # (B, N, C), tokens ordered (t, h, w)


QKV_BIASES = ("qv", "qkv", "none")


class Attention(nn.Module):
    """Multi-head self-attention computed by the fused `scaled_dot_product_attention`, optionally
    over extra keys/values. `bias`: "qv" (VideoMAE: separate q_bias and v_bias, no key bias),
    "qkv" (a bias on the fused qkv Linear: CLIP, timm) or "none"."""

    def __init__(self, dim: int, num_heads: int, bias: str = "qv", attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        if bias not in QKV_BIASES:
            raise ValueError(f"attention bias must be one of {QKV_BIASES}, got {bias!r}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=bias == "qkv")
        if bias == "qv":
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.v_bias = None
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, extra_kv: tuple | None = None, key_mask: torch.Tensor | None = None):
        """x (B, N, C); extra_kv (k, v) or (k, v, mask); key_mask (B, N) bool or None. A key whose mask is
        False takes no softmax mass (as if it were not there); without masks the fused kernel runs unmasked."""
        B, N, C = x.shape
        qkv = self.qkv(x)                                                   # (B, N, 3C)
        if self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias)).to(qkv.dtype)
            # no graph to keep (inference, frozen prefix): add in place, saving a (B, N, 3C) buffer
            qkv = qkv.add_(bias) if not (qkv.requires_grad or bias.requires_grad) else qkv + bias
        H, hd = self.num_heads, self.head_dim
        qkv = qkv.view(B, N, 3, H, hd).permute(2, 0, 3, 1, 4)              # (3, B, H, N, hd), a view
        q, kv = qkv[0], qkv[1:]                                             # (B, H, N, hd), (2, B, H, N, hd)
        extra_mask = None
        if extra_kv is not None:
            pk, pv, *rest = extra_kv                                        # (m, hd) or (B|1, H|1, m, hd)
            extra_mask = rest[0] if rest else None                          # (B, m) bool or None
            m = pk.shape[-2]
            pk, pv = torch.broadcast_tensors(pk, pv)
            lead = (1,) * (4 - pk.ndim)                                     # left-pad to (B|1, H|1, m, hd)
            pkv = torch.stack((pk, pv)).to(kv.dtype).view(2, *lead, *pk.shape)  # (2, 1, 1, m, hd): small
            pkv = pkv.expand(2, B, H, m, hd)                                # a view, no per-sample copy
            kv = torch.cat((kv, pkv), dim=3)                                # (2, B, H, N + m, hd): one copy
        k, v = kv.unbind(0)
        mask = None
        if key_mask is not None or extra_mask is not None:                 # (B, N [+ m]) bool, True = attend
            parts = [key_mask if key_mask is not None else x.new_ones(B, N, dtype=torch.bool)]
            if extra_kv is not None:
                parts.append(extra_mask if extra_mask is not None else x.new_ones(B, m, dtype=torch.bool))
            mask = torch.cat(parts, dim=1)[:, None, None, :]              # (B, 1, 1, keys)
        p = self.attn_drop.p if self.attn_drop.training else 0.0
        # CPU and CUDA both pick a fused (flash / memory-efficient) kernel here, with or without
        # prompts: q, k, v only need a unit stride on the last dim, and the output
        # comes back as (B, N, H, hd) memory, so the reshape below is free
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)   # (B, H, N, hd)
        out = out.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(out))


class QuickGELU(nn.Module):
    """CLIP's activation, x * sigmoid(1.702 x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {"gelu": nn.GELU, "quick_gelu": QuickGELU}


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0, act: str = "gelu"):
        super().__init__()
        if act not in ACTIVATIONS:
            raise ValueError(f"MLP activation must be one of {sorted(ACTIVATIONS)}, got {act!r}")
        self.fc1 = nn.Linear(dim, hidden)
        self.act = ACTIVATIONS[act]()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.act(self.fc1(x))))


# the method seams of a Block (None = the plain block), in the order its forward reaches them
SEAMS = ("tokens_in", "pre_attn", "kv_prompts", "attn_adapter", "pre_mlp", "mlp_adapter", "tokens_out", "wrap")


class Block(nn.Module):
    """Pre-norm transformer block with the method seams listed in this module's docstring."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: str = "qv",
                 norm_eps: float = 1e-6, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0, act: str = "gelu"):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop, act)
        # method seams (None = plain block)
        self.tokens_in: nn.Module | None = None
        self.pre_attn: nn.Module | None = None
        self.kv_prompts: nn.Module | None = None
        self.attn_adapter: nn.Module | None = None
        self.pre_mlp: nn.Module | None = None
        self.mlp_adapter: nn.Module | None = None
        self.tokens_out: nn.Module | None = None
        self.wrap: nn.Module | None = None

    def forward(self, x: torch.Tensor, layout: TokenLayout) -> tuple[torch.Tensor, TokenLayout]:
        if self.wrap is not None:
            return self.wrap(self, x, layout)
        if self.tokens_in is not None:
            x, layout = self.tokens_in(x, layout)
        if self.pre_attn is not None:
            x = self.pre_attn(x, layout)
        x = x + self.drop_path(self.attention(self.norm1(x), layout))
        if self.pre_mlp is not None:
            x = self.pre_mlp(x, layout)
        x = x + self.drop_path(self.feed_forward(x, layout))
        if self.tokens_out is not None:
            x, layout = self.tokens_out(x, layout)
        return x, layout

    def attention(self, h: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        """The attention branch on normalised input h (with kv_prompts and attn_adapter)."""
        a = self.attn(h, self.kv_prompts(layout) if self.kv_prompts is not None else None, layout.key_mask)
        if self.attn_adapter is not None:
            a = self.attn_adapter(h, a, layout)
        return a

    def feed_forward(self, x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        """The MLP branch on the stream x (norm2, MLP, plus mlp_adapter)."""
        h = self.norm2(x)
        y = self.mlp(h)
        if self.mlp_adapter is not None:
            y = y + self.mlp_adapter(x, h, layout)
        return y


# What each seam gives while empty (the plain block), for code that fills a seam for only some sequences of
# a batch (many tasks on one backbone, aptune.multitask). `wrap` takes over the whole block: it has none.
EMPTY_SEAMS = {
    "tokens_in": lambda x, layout: (x, layout),
    "pre_attn": lambda x, layout: x,
    "kv_prompts": lambda layout: None,
    "attn_adapter": lambda h, a, layout: a,
    "pre_mlp": lambda x, layout: x,
    "mlp_adapter": lambda x, h, layout: torch.zeros_like(x),
    "tokens_out": lambda x, layout: (x, layout),
}


def trunc_normal_init(module: nn.Module, std: float = 0.02) -> None:
    """VideoMAE's init: truncated normal for Linear weights, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=std)  # bounds +-2 absolute, as timm/VideoMAE
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def uniform_prompt_bound(patch_size: int, width: int, in_chans: int = 3) -> float:
    """Bound a of the uniform(-a, a) prompt init used by VPT and APT: sqrt(6 / (3*p*p + width))."""
    return math.sqrt(6.0 / (in_chans * patch_size * patch_size + width))
