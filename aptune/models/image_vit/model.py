"""Image Vision Transformers run on video: CLIP's vision tower ("clip") and the supervised timm ViT ("vit").

    video (B, 3, T, H, W) -> frames (B*T, 3, H, W)
      -> patch embedding (Conv2d, kernel = stride = p)                  (B*T, N, C), N = H/p * W/p
      -> [cls; patches] + learned position table (1, 1 + N, C)          (B*T, 1 + N, C)
      -> + temporal embedding (1, T, C) on every token of frame t       (joint layout; AIM in frames)
      -> ln_pre (CLIP only)
      -> token layout, chosen by `layout`:
           frames  each frame is its own sequence of 1 + N tokens, frames folded into the batch
           joint   one sequence per clip, [cls_1 .. cls_T | patches (t, h, w)], all frames in one attention
      -> depth x Block (pre-norm MHA + MLP with method seams; QuickGELU for CLIP, GELU for timm)
      -> the frames' class tokens averaged over time -> ln_post -> dropout -> head

Why one class token per frame in the joint layout too: a one-frame clip is then exactly the image
model in both layouts, and T copies of one frame give the image model's features (every key
appears T times, so the softmax weights are unchanged). The joint layout's temporal embedding is
zero at init and is a head module: it trains with every method (linear probing too, so a joint
linear probe cannot train on cached features). CLIP's projection `proj` is not used: the features
are ln_post of the class token, before the projection.

Backbone-level seams (besides the block seams of `layers.Block`), filled by methods:
    temporal_embed   None or a `TemporalEmbedding`; the joint layout has its own, AIM adds one in frames
    frame_norm       False: ln_post on the time average of the class tokens (CLIP ST-Adapter);
                     True: ln_post on each frame's class token, then the average (AIM's I3D head)

Parameters are named as timm names them (`cls_token`, `pos_embed`, `patch_embed.proj`, `blocks.{i}.attn.qkv`,
...), CLIP's extra pre-norm `ln_pre` and the final norm `ln_post` (timm's `norm`, renamed as AIM does), so
every method seam and LoRA target works unchanged. Checkpoint formats: `formats.py`; zoo models: `__init__.py`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...errors import CheckpointError
from ..backbone import Backbone, BackboneConfig
from ..layers import ACTIVATIONS, Block, TokenLayout, trunc_normal_init

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)     # OpenAI CLIP's preprocessing (clip.py)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)                              # Google's supervised ViT weights (timm, HF ViTImageProcessor)
IMAGE_LAYOUTS = ("frames", "joint")


@dataclass
class ImageViTConfig(BackboneConfig):
    """Fields shared by the image ViT families, besides every family's (models/backbone.py; qkv_bias: a
    bias on the fused q, k, v projection); use `CLIPViTConfig` or `SupViTConfig`."""
    num_frames: int = 8
    patch_bias: bool = True        # a bias on the patch embedding (CLIP's conv1 has none)
    ln_pre: bool = False           # a LayerNorm after the embedding (CLIP)
    act: str = "gelu"              # MLP activation: gelu (exact) or quick_gelu (CLIP)
    layout: str = "frames"         # frames | joint (module docstring)
    mean: tuple[float, float, float] = HALF
    std: tuple[float, float, float] = HALF

    family = ""

    @property
    def tubelet_size(self) -> int:
        return 1                   # every frame is embedded on its own

    def grid(self, num_frames: int | None = None, img_size: int | None = None) -> tuple[int, int, int]:
        """Patch grid (t, h, w) of one frame: (1, S/p, S/p)."""
        s = (img_size or self.img_size) // self.patch_size
        return 1, s, s

    def validate(self) -> None:
        super().validate()
        if self.num_frames < 1:
            self.bad("num_frames", f"must be at least 1, got {self.num_frames}")
        if self.act not in ACTIVATIONS:
            self.bad("act", f"must be one of {sorted(ACTIVATIONS)}, got {self.act!r}")
        if self.layout not in IMAGE_LAYOUTS:
            self.bad("layout", f"must be one of {', '.join(IMAGE_LAYOUTS)}, got {self.layout!r}")


@dataclass
class CLIPViTConfig(ImageViTConfig):
    """OpenAI CLIP's vision tower: ln_pre, QuickGELU, LayerNorm eps 1e-5, no patch bias, CLIP's normalisation."""
    patch_bias: bool = False
    ln_pre: bool = True
    act: str = "quick_gelu"
    norm_eps: float = 1e-5
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    family = "clip"


@dataclass
class SupViTConfig(ImageViTConfig):
    """The supervised ViT of timm / Google (ImageNet-21k, -1k): GELU, eps 1e-6, mean = std = 0.5."""
    family = "vit"


class TemporalEmbedding(nn.Module):
    """A learned embedding per frame, (1, T, C), zero at init, added to every token of frame t:
    (B*T, L, C) -> (B*T, L, C). Never weight-decayed, like the position table."""

    def __init__(self, num_frames: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, num_frames, dim))

    def no_weight_decay(self) -> set[str]:
        return {"weight"}

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        T = self.weight.shape[1]
        if frames != T:
            raise ValueError(f"the clip has {frames} frames but the temporal embedding was built for {T}; "
                             f"create the model with num_frames={frames}")
        S, L, C = x.shape
        x = x.view(S // T, T, L, C) + self.weight.to(x.dtype)[:, :, None]      # (B, T, L, C)
        return x.view(S, L, C)

    def extra_repr(self) -> str:
        return f"num_frames={self.weight.shape[1]}, dim={self.weight.shape[2]}"


class FramePatchEmbed(nn.Module):
    """Each frame on its own: Conv2d with kernel = stride = p, (S, 3, H, W) -> (S, N, C), N in (h, w) order."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, bias: bool):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)                          # (S, C, h, w) -> (S, N, C)


class ImageViT(Backbone):
    """An image ViT on video (families "clip" and "vit", told apart by the config class)."""
    stem = ("patch_embed.", "cls_token", "pos_embed", "temporal_embed.", "ln_pre.")
    position_keys = ("pos_embed", "temporal_embed.weight")
    pools_prefix_only = True       # the features read only the class tokens after the last block

    def __init__(self, config: ImageViTConfig):
        super().__init__()
        config.validate()
        self.config = c = config
        self.family = type(c).family
        self.layout = c.layout
        C, n = c.embed_dim, (c.img_size // c.patch_size) ** 2
        self.patch_embed = FramePatchEmbed(c.in_chans, C, c.patch_size, c.patch_bias)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, C))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + n, C))
        self.temporal_embed = TemporalEmbedding(c.num_frames, C) if c.layout == "joint" else None
        self.ln_pre = nn.LayerNorm(C, eps=c.norm_eps) if c.ln_pre else None
        self.pos_drop = nn.Dropout(c.drop_rate)
        dpr = torch.linspace(0, c.drop_path_rate, c.depth, device="cpu").tolist()  # works under torch.device("meta")
        self.blocks = nn.ModuleList([
            Block(C, c.num_heads, c.mlp_ratio, "qkv" if c.qkv_bias else "none", c.norm_eps, c.drop_rate,
                  c.attn_drop_rate, dpr[i], act=c.act) for i in range(c.depth)])
        self.ln_post = nn.LayerNorm(C, eps=c.norm_eps)
        self.head_drop = nn.Dropout(c.head_dropout)
        self.head = nn.Linear(C, c.num_classes) if c.num_classes > 0 else nn.Identity()
        self.frame_norm = False
        self.apply(trunc_normal_init)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    # ---- the contract (models/backbone.py) ----------------------------------------------------
    def head_modules(self) -> list[nn.Module]:
        extra = [self.temporal_embed] if self.layout == "joint" else []
        return extra + [self.head_drop, self.head]

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}

    def layer_id(self, name: str) -> int:
        if name.startswith("temporal_embed."):
            return self.depth + 1          # new and zero at init: it learns at the head's rate
        return super().layer_id(name)

    # ---- positions ----------------------------------------------------------------------------
    def position_embedding(self, n: int) -> torch.Tensor:
        if self.pos_embed.shape[1] != 1 + n:
            s = math.isqrt(self.pos_embed.shape[1] - 1)
            raise ValueError(f"the position table is for {s}x{s} patches ({self.config.img_size} px) but the "
                             f"input gives {n}; create the model with that img_size (checkpoints are interpolated "
                             "when loaded)")
        return self.pos_embed

    def fit_position_table(self, key: str, t: torch.Tensor, source_grid, report: dict) -> torch.Tensor | None:
        """A checkpoint's table for this model (checkpoints.fit): the position table's patch part is
        resized bicubically over its square grid (the class token's entry kept apart), a temporal
        embedding linearly over time; a temporal embedding the model has no place for is skipped."""
        C = t.shape[-1]
        if key == "temporal_embed.weight":
            if self.temporal_embed is None:
                report["skipped"].append(key)
                report["notes"].append("temporal_embed skipped: the model has none (frames layout without AIM)")
                return None
            T = self.temporal_embed.weight.shape[1]
            if t.shape[1] != T:
                g = F.interpolate(t.float().transpose(1, 2), size=T, mode="linear", align_corners=False)
                report["notes"].append(f"temporal_embed interpolated (linear) from {t.shape[1]} to {T} frames")
                t = g.transpose(1, 2).to(t.dtype)                              # (1, T, C)
            return t
        table = t.reshape(1, -1, C)
        cls, patches = table[:, :1], table[:, 1:]
        s, want = math.isqrt(patches.shape[1]), self.config.img_size // self.config.patch_size
        if s * s != patches.shape[1]:
            raise CheckpointError(f"pos_embed has {table.shape[1]} entries: not 1 class token + a square grid")
        if s != want:
            grid = patches.reshape(1, s, s, C).permute(0, 3, 1, 2).float()    # (1, C, s, s)
            grid = F.interpolate(grid, size=(want, want), mode="bicubic", align_corners=False)
            patches = grid.permute(0, 2, 3, 1).reshape(1, want * want, C).to(t.dtype)
            report["notes"].append(f"pos_embed interpolated (bicubic) from {s}x{s} to {want}x{want} patches, "
                                   "the class token's entry kept")
        return torch.cat((cls, patches), dim=1)

    def set_norm_eps(self, norm_eps: float) -> None:
        """Every LayerNorm's eps (and the config's, which adapters record)."""
        for m in self.modules():
            if isinstance(m, nn.LayerNorm):
                m.eps = norm_eps
        self.config.norm_eps = norm_eps

    # ---- forward -----------------------------------------------------------------------------
    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, TokenLayout]:
        c = self.config
        if x.ndim != 5 or x.shape[1] != c.in_chans:
            raise ValueError(f"expected video (B, {c.in_chans}, T, H, W), got shape {tuple(x.shape)}")
        B, _, T, H, W = x.shape
        if H % c.patch_size or W % c.patch_size:
            raise ValueError(f"frames {H}x{W} are not divisible by the patch size {c.patch_size}")
        h, w = H // c.patch_size, W // c.patch_size
        x = self.patch_embed(x.transpose(1, 2).reshape(B * T, c.in_chans, H, W))   # (B*T, N, C)
        cls = self.cls_token.to(x.dtype).expand(B * T, -1, -1)
        x = torch.cat((cls, x), dim=1) + self.position_embedding(h * w).to(x.dtype)  # (B*T, 1 + N, C)
        if self.temporal_embed is not None:
            x = self.temporal_embed(x, T)
        if self.ln_pre is not None:
            x = self.ln_pre(x)
        x = self.pos_drop(x)
        if self.layout == "frames":
            return x, TokenLayout(frames=T, grid=(1, h, w), prefix=1, folded=True)
        x = x.view(B, T, 1 + h * w, -1)
        x = torch.cat((x[:, :, 0], x[:, :, 1:].flatten(1, 2)), dim=1)          # (B, T + T*N, C): [cls_1..T | patches]
        return x, TokenLayout(frames=T, grid=(T, h, w), prefix=T)

    def pool(self, x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        cls = x[:, :layout.prefix].reshape(-1, layout.frames, x.shape[-1])     # (B, T, C): each frame's class token
        if self.frame_norm:
            return self.ln_post(cls).mean(dim=1)
        return cls.mean(dim=1)

    def normalize_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        return pooled if self.frame_norm else self.ln_post(pooled)
