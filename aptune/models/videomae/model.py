"""The video Vision Transformer of VideoMAE, readable top to bottom.

    video (B, 3, T, H, W)
      -> tubelet embedding (Conv3d, kernel = stride = (t, p, p))      (B, N, C), N = T/t * H/p * W/p
      -> + fixed sin-cos position table (rebuilt for any T, H, W)
      -> depth x Block (pre-norm MHA + MLP, with method seams)        (B, N, C)
      -> mean over tokens -> fc_norm -> dropout -> head               (B, num_classes)

No class token; all tokens of a clip attend to each other (layout "joint"). Methods attach to the
seams of `layers.Block`; this file knows none of them. The checkpoint formats of this family are
in `formats.py`, its zoo models in `__init__.py`.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn as nn

from ...errors import ConfigError
from ...normalization import IMAGENET_MEAN, IMAGENET_STD
from ..backbone import Backbone, BackboneConfig
from ..layers import Block, PatchEmbed, TokenLayout, sinusoid_table, trunc_normal_init
from ..positions import interpolate_pos_embed


@dataclass
class VideoMAEConfig(BackboneConfig):
    """VideoMAE's ViT: the shared fields (models/backbone.py; qkv_bias: q and v biases, the key has none)
    and these."""
    tubelet_size: int = 2
    fc_norm_eps: float | None = None  # eps of fc_norm when it differs from norm_eps (HF VideoMAE: 1e-5)
    init_scale: float = 0.001     # head weights are scaled by this after init (VideoMAE)
    fc_norm: bool = True          # LayerNorm on the pooled tokens (VideoMAE); False: the head sees the mean
    learnable_pos_embed: bool = False
    mean: tuple[float, float, float] = IMAGENET_MEAN   # input normalisation the backbone was trained with
    std: tuple[float, float, float] = IMAGENET_STD

    family = "videomae"

    def grid(self, num_frames: int | None = None, img_size: int | None = None) -> tuple[int, int, int]:
        """Token grid (t, h, w) for a clip of num_frames x img_size x img_size."""
        T = num_frames or self.num_frames
        S = img_size or self.img_size
        return T // self.tubelet_size, S // self.patch_size, S // self.patch_size

    def validate(self) -> None:
        if self.num_frames % self.tubelet_size:
            self.bad("num_frames", f"{self.num_frames} frames are not divisible by tubelet_size {self.tubelet_size}")
        super().validate()


class VideoMAEViT(Backbone):
    """VideoMAE's ViT (the "videomae" backbone family; timm's supervised ViT is the "vit" family, image_vit.py)."""
    family = "videomae"
    stem = ("patch_embed.", "pos_embed")
    position_keys = ("pos_embed",)

    def __init__(self, config: VideoMAEConfig):
        super().__init__()
        config.validate()
        self.config = c = config
        self.patch_embed = PatchEmbed(c.in_chans, c.embed_dim, c.patch_size, c.tubelet_size)
        n = self._num_tokens(c.num_frames, c.img_size, c.img_size)
        if c.learnable_pos_embed:
            self.pos_embed = nn.Parameter(torch.zeros(1, n, c.embed_dim))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        else:
            self.register_buffer("pos_embed", sinusoid_table(n, c.embed_dim), persistent=False)
        self.pos_drop = nn.Dropout(c.drop_rate)
        self._tables: dict = {}                   # the sin-cos table of another clip size, cached
        dpr = torch.linspace(0, c.drop_path_rate, c.depth, device="cpu").tolist()  # works under torch.device("meta")
        bias = "qv" if c.qkv_bias else "none"
        self.blocks = nn.ModuleList([
            Block(c.embed_dim, c.num_heads, c.mlp_ratio, bias, c.norm_eps, c.drop_rate,
                  c.attn_drop_rate, dpr[i]) for i in range(c.depth)])
        # fc_norm=False keeps the attribute (as Identity) so head_modules() and set_norm_eps stay one code path
        self.fc_norm = (nn.LayerNorm(c.embed_dim, eps=c.norm_eps if c.fc_norm_eps is None else c.fc_norm_eps)
                        if c.fc_norm else nn.Identity())
        self.head_drop = nn.Dropout(c.head_dropout)
        self.head = nn.Linear(c.embed_dim, c.num_classes) if c.num_classes > 0 else nn.Identity()
        self.apply(trunc_normal_init)
        if isinstance(self.head, nn.Linear):
            self.head.weight.data.mul_(c.init_scale)
            self.head.bias.data.mul_(c.init_scale)

    # ---- the contract (models/backbone.py) ----------------------------------------------------
    def head_modules(self) -> list[nn.Module]:
        return [self.fc_norm, self.head_drop, self.head]

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}

    # ---- positions -------------------------------------------------------------------------
    def _num_tokens(self, T: int, H: int, W: int) -> int:
        c = self.config
        return (T // c.tubelet_size) * (H // c.patch_size) * (W // c.patch_size)

    def position_embedding(self, n: int) -> torch.Tensor:
        """(1, n, C) position table for n tokens; the sin-cos table is rebuilt for other sizes."""
        if self.pos_embed.shape[1] == n:
            return self.pos_embed
        if self.config.learnable_pos_embed:
            raise ConfigError(
                f"learned position embedding has {self.pos_embed.shape[1]} tokens but the input gives {n}; "
                "interpolate it when loading the checkpoint (aptune.models.checkpoints) for another clip size")
        key = (n, self.pos_embed.device)
        if self._tables.get("key") != key:        # built once per clip size, not every forward
            self._tables = {"key": key, "table": sinusoid_table(n, self.config.embed_dim).to(self.pos_embed.device)}
        return self._tables["table"]

    def fit_position_table(self, key: str, t: torch.Tensor, source_grid, report: dict) -> torch.Tensor | None:
        """A checkpoint's position table for this model (checkpoints.fit): a learned table is
        interpolated over the (t, h, w) grid; with the fixed sin-cos table the file's is dropped."""
        c = self.config
        if not c.learnable_pos_embed:
            fixed = t.shape[-1] == c.embed_dim and torch.allclose(
                t.float().reshape(1, -1, c.embed_dim), sinusoid_table(t.shape[-2], c.embed_dim), atol=1e-4)
            report["skipped"].append(key)
            report["notes"].append("pos_embed dropped: " + (
                "the fixed sin-cos table, which the model rebuilds for its own clip size" if fixed else
                "the checkpoint has a LEARNED position table but the model uses the fixed sin-cos one; "
                "create it with learnable_pos_embed=True to use it"))
            return None
        target = c.grid()
        table = t.reshape(1, -1, t.shape[-1])
        new = interpolate_pos_embed(table, target, source_grid)
        if new.shape[1] != table.shape[1]:
            report["notes"].append(f"pos_embed interpolated (trilinear) from {t.shape[-2]} tokens to the grid {target}")
        return new

    def set_norm_eps(self, norm_eps: float, fc_norm_eps: float | None) -> None:
        """Change every LayerNorm's eps (and the config, which adapters record)."""
        for blk in self.blocks:
            blk.norm1.eps = blk.norm2.eps = norm_eps
        if isinstance(self.fc_norm, nn.LayerNorm):
            self.fc_norm.eps = norm_eps if fc_norm_eps is None else fc_norm_eps
        self.config.norm_eps, self.config.fc_norm_eps = norm_eps, fc_norm_eps

    # ---- forward -----------------------------------------------------------------------------
    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, TokenLayout]:
        c = self.config
        if x.ndim != 5 or x.shape[1] != c.in_chans:
            raise ValueError(f"expected video (B, {c.in_chans}, T, H, W), got shape {tuple(x.shape)}")
        _, _, T, H, W = x.shape
        if T % c.tubelet_size or H % c.patch_size or W % c.patch_size:
            raise ValueError(f"clip {T}x{H}x{W} is not divisible by tubelet {c.tubelet_size} and patch {c.patch_size}")
        x = self.patch_embed(x)                                              # (B, N, C)
        x = self.pos_drop(x + self.position_embedding(x.shape[1]).to(x.dtype))
        grid = (T // c.tubelet_size, H // c.patch_size, W // c.patch_size)
        return x, TokenLayout(frames=T, grid=grid)

    def pool(self, x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        return x[:, layout.patch_start:].mean(dim=1)                         # (B, C): mean of the patch tokens

    def normalize_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc_norm(pooled)


# the names these classes had before they said VideoMAE; kept for one release
DEPRECATED = {"ViTConfig": VideoMAEConfig, "VisionTransformer": VideoMAEViT}


def deprecated_names(module: str):
    """A module `__getattr__` (PEP 562) that gives the DEPRECATED names with a DeprecationWarning: this
    module's, and that of aptune and aptune.models, which hand them on."""
    def __getattr__(name: str):
        if name in DEPRECATED:
            new = DEPRECATED[name].__name__
            warnings.warn(f"{name} is deprecated: it is VideoMAE's ViT only; use {new}", DeprecationWarning,
                          stacklevel=2)
            return DEPRECATED[name]
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    return __getattr__


__getattr__ = deprecated_names(__name__)
