"""AIM: Adapting Image Models (Yang et al. 2023, arXiv 2302.03024), on an image ViT in the frames layout.

Each selected block is run by the method (the block's `wrap` seam), reusing the block's frozen
LN1, attention, LN2 and MLP. With x the stream (B*T, L, C) of T frames and Ad(h) = fc2(GELU(fc1(h))),
fc1: C -> C/4, fc2: C/4 -> C (exact GELU), adapters "with skip" returning h + Ad(h):

    temporal  x_t = x regrouped (B*L, T, C): each token position's T frames as one sequence
              x   = x + T-Adapter(Attn(T-Adapter-in(LN1(x_t))))    T-Adapter without skip, -in with skip
    spatial   x   = x + S-Adapter(Attn(LN1(x)))                    with skip
    joint     x   = x + MLP(LN2(x)) + s * MLP-Adapter(LN2(x))      without skip

and a temporal embedding (1, T, C), zero at init, is added to every token of frame t before ln_pre
(the backbone's `temporal_embed` seam). The head averages ln_post of each frame's class token over
time (the backbone's `frame_norm`), as AIM's I3D head pools ln_post(x)[:, 0]; with `norm_per_frame=False`,
ln_post of the average, as the backbone (and ST-Adapter) pool. At init the model is the image model
on every frame, its features averaged over time. As the official code
(taoyang1122/adapt-image-models, `vit_clip.py`): the second Linear of every adapter is zero at init
(so the model starts as the image model); the first keeps timm's trunc-normal init (std 0.02, zero
bias); stochastic depth (linear over blocks up to `adapter_drop_path`) on the temporal branch and the
MLP-Adapter branch only; s = 1 and two temporal adapters (`num_tadapter=2`) in the SSv2 configs, s = 0.5
for K400 (one temporal adapter is the code's default). Only the frames layout: the temporal and the
spatial pass need each frame as its own sequence.

Not for many tasks on one backbone (`cannot_share`): the wrap regroups a batch's sequences over time, and
the temporal embedding and ln_post are backbone modules every task would share.

Trains: the adapters, the temporal embedding, ln_post and the backbone's head modules (the official
`tools/train.py` keeps `temporal_embedding`, `ln_post`, `cls_head` and `*Adapter*` trainable).
Parameters: (2 + num_tadapter) adapters per block of 2 * C * C/4 + C/4 + C, + T * C + 2 C + head:
ViT-B/16, 8 frames, 174 classes: 12 * 4 * 295,872 + 8 * 768 + 2 * 768 + 768 * 174 + 174 = 14,343,342.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..models.image_vit import TemporalEmbedding
from ..models.layers import DropPath, trunc_normal_init
from .registry import check_int, check_layers, check_prob, register, resolve_layers


@dataclass
class AIMConfig:
    mlp_ratio: float = 0.25         # adapter bottleneck C * mlp_ratio
    scale: float = 1.0              # s on the MLP-Adapter (SSv2 1, K400 0.5)
    num_tadapter: int = 2           # 2: T-Adapter-in + T-Adapter (the SSv2 configs), 1: T-Adapter only
    adapter_drop_path: float = 0.0  # stochastic depth of the adapter branches (official SSv2: 0.2)
    norm_per_frame: bool = True     # ln_post on each frame's class token, then the time average (AIM's head);
                                    # false: the backbone's own pooling, ln_post of the average
    layers: list[int] | None = None  # block indices; None = all blocks

    def __post_init__(self):
        if isinstance(self.mlp_ratio, bool) or not isinstance(self.mlp_ratio, (int, float)) or self.mlp_ratio <= 0:
            raise ConfigError(f"aim.mlp_ratio: must be a positive number, got {self.mlp_ratio!r}")
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)):
            raise ConfigError(f"aim.scale: must be a number, got {self.scale!r}")
        check_int("aim", "num_tadapter", self.num_tadapter, 1)
        if self.num_tadapter > 2:
            raise ConfigError(f"aim.num_tadapter: must be 1 or 2, got {self.num_tadapter}")
        check_prob("aim", "adapter_drop_path", self.adapter_drop_path)
        if not isinstance(self.norm_per_frame, bool):
            raise ConfigError(f"aim.norm_per_frame: must be true or false, got {self.norm_per_frame!r}")
        check_layers("aim", self.layers)


class Adapter(nn.Module):
    """h (..., C) -> fc2(GELU(fc1(h))), plus h when `skip`; fc2 zero at init."""

    def __init__(self, dim: int, hidden: int, skip: bool):
        super().__init__()
        self.skip = skip
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        trunc_normal_init(self.fc1)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        y = self.fc2(self.act(self.fc1(h)))
        return h + y if self.skip else y

    def extra_repr(self) -> str:
        return f"skip={self.skip}"


class AIMBlock(nn.Module):
    """wrap seam: (block, x, layout) -> (x', layout), the block run as in this module's docstring."""

    def __init__(self, dim: int, hidden: int, scale: float, num_tadapter: int, drop_path: float):
        super().__init__()
        self.scale = scale
        self.t_adapter_in = Adapter(dim, hidden, skip=True) if num_tadapter == 2 else None
        self.t_adapter = Adapter(dim, hidden, skip=False)
        self.s_adapter = Adapter(dim, hidden, skip=True)
        self.mlp_adapter = Adapter(dim, hidden, skip=False)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()   # as the official code

    def forward(self, block, x: torch.Tensor, layout):
        S, L, C = x.shape
        T = layout.frames
        xt = x.view(S // T, T, L, C).transpose(1, 2).reshape(-1, T, C)          # (B*L, T, C): a sequence over time
        h = block.norm1(xt)
        if self.t_adapter_in is not None:
            h = self.t_adapter_in(h)
        xt = self.t_adapter(block.attn(h))
        xt = xt.view(S // T, L, T, C).transpose(1, 2).reshape(S, L, C)          # back to (B*T, L, C)
        x = x + self.drop_path(xt)
        x = x + self.s_adapter(block.attn(block.norm1(x)))
        h = block.norm2(x)
        x = x + block.mlp(h) + self.drop_path(self.scale * self.mlp_adapter(h))
        return x, layout

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


@register("aim", AIMConfig, "AIM: temporal, spatial and MLP adapters around the frozen attention and MLP of "
          "an image ViT", layouts=("frames",),
          cannot_share="runs each block it adapts itself (the frozen attention also over time, on sequences "
                       "regrouped across a clip's frames) and trains the temporal embedding and ln_post, which "
                       "every task on a shared backbone uses")
def apply(model, cfg: AIMConfig) -> list[nn.Module]:
    if not (hasattr(model, "temporal_embed") and hasattr(model, "frame_norm")):
        raise ConfigError(f"aim: needs an image ViT backbone (families clip, vit); this is a {model.family} backbone")
    layers = resolve_layers(cfg.layers, model.depth, "aim")
    dpr = torch.linspace(0, cfg.adapter_drop_path, model.depth, device="cpu").tolist()
    hidden = int(model.embed_dim * cfg.mlp_ratio)
    added = []
    for i in layers:
        blk = model.blocks[i]
        blk.wrap = AIMBlock(model.embed_dim, hidden, float(cfg.scale), cfg.num_tadapter, dpr[i])
        added.append(blk.wrap)
    model.temporal_embed = TemporalEmbedding(model.config.num_frames, model.embed_dim)
    model.frame_norm = cfg.norm_per_frame
    return added + [model.temporal_embed, model.ln_post]
