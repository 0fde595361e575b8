"""ST-Adapter (Pan et al. 2022, arXiv 2206.13559): a depth-wise 3D convolution over the patch tokens
of the clip, in a bottleneck on the residual stream.

Before the MLP of each selected block (the `pre_mlp` seam; with `pre_attn` also before attention),
on the stream x with its patch tokens P laid out as the clip's grid (B, C, T, h, w):

    P <- P + fc2(DWConv3d(fc1(P)))       fc1: C -> w, DWConv3d: w -> w, groups = w, fc2: w -> C

No activation; class tokens (and any prompts) are left untouched. As the official code has it
(linziyi96/st-adapter, `models_adapter.py`): width w = 384, kernel (3, 1, 1) with padding k // 2 =
(1, 0, 0) (mixing each patch position over neighbouring frames), the conv's weight and bias and both
fc biases zero at init, fc weights PyTorch's default init, so the adapter starts as the identity.
The grid comes from the token layout, so it works in both layouts (frames: each frame's patches,
stacked over time; joint: the clip's (t, h, w) grid, for VideoMAE the tubelet grid).

A backbone that pools only its class tokens (the image ViTs: `pools_prefix_only`) never reads the patch
tokens after the last block's attention, so a pre-MLP adapter there cannot change the output (the
official 12 x 384 trains such an adapter, 592,512 parameters that get no gradient). With `layers=None`
it is left out; naming the last block in `layers` adds it, as the official count has it.

Many tasks on one backbone: each task's adapter on its own sequences (`serve_rows`); a clip's frames stay
together, so the conv over time sees only its own clip.

Trains: the adapters and the backbone's head modules; the class token and ln_post stay frozen (the
official code freezes everything but the adapters and its fc head). Official recipes: K400 12 x 384
(before the MLP only), SSv2 24 x 384 (`pre_attn` too).
Parameters per adapter: 2 * C * w + C + w (fc1, fc2) + w * kT * kH * kW + w (conv): 592,512 for
C = 768, w = 384; ViT-B/16, 12 adapters (`layers` 0..11), 174 classes: 12 * 592,512 + 768 * 174 + 174 =
7,243,950 (the official count; 6,651,438 with `layers=None`, without the last block's).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..errors import ConfigError
from .registry import check_int, check_layers, register, resolve_layers, serve_rows


@dataclass
class STAdapterConfig:
    width: int = 384                          # bottleneck channels w
    kernel: tuple[int, int, int] = (3, 1, 1)  # (t, h, w) of the depth-wise conv; odd sizes (padding k // 2)
    pre_attn: bool = False                    # an adapter before attention too (the official SSv2 24 x 384)
    pre_mlp: bool = True
    layers: list[int] | None = None           # block indices; None = every block where an adapter can act

    def __post_init__(self):
        check_int("st_adapter", "width", self.width, 1)
        kernel = list(self.kernel) if isinstance(self.kernel, (list, tuple)) else [self.kernel]
        if len(kernel) != 3 or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 and k % 2
                                       for k in kernel):
            raise ConfigError(f"st_adapter.kernel: must be three odd positive sizes (t, h, w), got {self.kernel!r}")
        self.kernel = tuple(kernel)
        for field in ("pre_attn", "pre_mlp"):
            if not isinstance(getattr(self, field), bool):
                raise ConfigError(f"st_adapter.{field}: must be true or false, got {getattr(self, field)!r}")
        if not (self.pre_attn or self.pre_mlp):
            raise ConfigError("st_adapter.pre_attn, st_adapter.pre_mlp: both false, no adapter would be added")
        check_layers("st_adapter", self.layers)


class STAdapter(nn.Module):
    """pre_attn / pre_mlp seam: (x, layout) -> x with fc2(DWConv3d(fc1(.))) added to its patch tokens."""

    mixed_forward = staticmethod(serve_rows)     # many tasks on one backbone: each on its own rows

    def __init__(self, dim: int, width: int, kernel: tuple[int, int, int]):
        super().__init__()
        self.fc1 = nn.Linear(dim, width)
        self.conv = nn.Conv3d(width, width, kernel, padding=tuple(k // 2 for k in kernel), groups=width)
        self.fc2 = nn.Linear(width, dim)
        for t in (self.conv.weight, self.conv.bias, self.fc1.bias, self.fc2.bias):
            nn.init.zeros_(t)

    def forward(self, x: torch.Tensor, layout) -> torch.Tensor:
        s = layout.patch_start
        h = self.fc1(x[:, s:])                                        # (S, N, w)
        h = layout.from_grid(self.conv(layout.patch_grid(h)))         # (B, w, T, h, w) conv, back to (S, N, w)
        return torch.cat((x[:, :s], x[:, s:] + self.fc2(h)), dim=1)

    def extra_repr(self) -> str:
        return f"width={self.conv.in_channels}, kernel={tuple(self.conv.kernel_size)}"


@register("st_adapter", STAdapterConfig,
          "ST-Adapter: a depth-wise 3D conv bottleneck over the patch tokens before the MLP (and attention)")
def apply(model, cfg: STAdapterConfig) -> list[nn.Module]:
    added = []
    last = model.depth - 1
    dead = cfg.layers is None and getattr(model, "pools_prefix_only", False)   # module docstring
    for i in resolve_layers(cfg.layers, model.depth, "st_adapter"):
        blk = model.blocks[i]
        if cfg.pre_attn:
            blk.pre_attn = STAdapter(model.embed_dim, cfg.width, cfg.kernel)
            added.append(blk.pre_attn)
        if cfg.pre_mlp and not (dead and i == last):
            blk.pre_mlp = STAdapter(model.embed_dim, cfg.width, cfg.kernel)
            added.append(blk.pre_mlp)
    return added
