"""The backbone contract: what every backbone family (VideoMAE, the image ViTs; registered in zoo.py)
provides, and the forward pass they share.

A family subclasses `Backbone` and gives

    family              its name ("videomae", ...), recorded in adapter files
    stem                names of the parameters the embedding uses before block 0 (patch embedding,
                        positions, class token, pre-norm): when one of them trains, no block can
                        run without autograd
    blocks              nn.ModuleList of `layers.Block` (the method seams)
    embed(x)            video (B, 3, T, H, W) -> tokens (S, L, C) and their `TokenLayout`
    pool(x, layout)     tokens after the last block -> pooled features (B, C); frozen with every
                        method that caches features (linear probing)
    normalize_pooled    pooled -> the features the head's Linear sees (VideoMAE: fc_norm)
    (the forward, shared: forward_features -> tokens and their layout, forward_head -> logits, or with
    pre_logits=True the features the head's Linear sees, as timm's forward_features / forward_head)
    head_modules()      the modules that train with every method (VideoMAE: fc_norm, head)
    no_weight_decay()   parameter names (of its own) that are never decayed (timm's convention)
    layer_id(name)      0 for the stem, i + 1 for block i, depth + 1 after the blocks (layer decay)
    layout              "joint" (all frames in one attention) or "frames" (one sequence per frame)

Tuning state (which method, what trains) is not the backbone's: `aptune.methods` keeps it in
`model.tuning` and decides the train/eval policy (`Backbone.train` defers to it).
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from .. import adapter_files
from ..errors import ConfigError
from .layers import SEAMS, TokenLayout


@dataclass
class BackboneConfig:
    """The fields every family's config has (what the contract reads). A family's dataclass subclasses
    it, adds its own fields (at least `mean` and `std`, the input normalisation of its weights), states
    its `family` and `grid(num_frames, img_size)` and extends `validate`."""
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    patch_size: int = 16
    in_chans: int = 3
    num_frames: int = 16
    img_size: int = 224
    qkv_bias: bool = True         # biases on the attention's input projection (VideoMAE: q and v only)
    norm_eps: float = 1e-6
    num_classes: int = 0
    drop_rate: float = 0.0        # dropout after projections
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0   # stochastic depth, linearly increasing over blocks
    head_dropout: float = 0.0     # dropout before the classification head (VideoMAE's fc_drop_rate)

    family = ""

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    def bad(self, field: str, msg: str):
        raise ConfigError(f"{type(self).__name__}.{field}: {msg}")

    def validate(self) -> None:
        if self.embed_dim % self.num_heads:
            self.bad("num_heads", f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.img_size % self.patch_size:
            self.bad("img_size", f"{self.img_size} is not divisible by patch_size {self.patch_size}")
        if self.depth < 1:
            self.bad("depth", "must be at least 1")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown field(s) {sorted(unknown)}; known: {sorted(known)}")
        d = {k: tuple(v) if k in ("mean", "std") else v for k, v in d.items()}   # JSON gives lists
        return cls(**d)


class Backbone(nn.Module):
    family: str = ""
    stem: tuple[str, ...] = ()
    layout: str = "joint"

    def __init__(self):
        super().__init__()
        self.grad_checkpointing = False
        self.tuning = None              # set by aptune.methods.apply_method

    # ---- sizes every method may read ---------------------------------------------------------
    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def depth(self) -> int:
        return len(self.blocks)

    @property
    def num_heads(self) -> int:
        return self.config.num_heads

    @property
    def head_dim(self) -> int:
        return self.config.embed_dim // self.config.num_heads

    @property
    def patch_size(self) -> int:
        return self.config.patch_size

    @property
    def in_chans(self) -> int:
        return self.config.in_chans

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    # ---- what a family provides ---------------------------------------------------------------
    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, TokenLayout]:
        raise NotImplementedError

    def pool(self, x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        raise NotImplementedError

    def normalize_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        return pooled

    def head_modules(self) -> list[nn.Module]:
        raise NotImplementedError

    def no_weight_decay(self) -> set[str]:
        return set()

    def layer_id(self, name: str) -> int:
        if name.startswith(self.stem):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self.depth + 1

    # ---- frozen prefix ------------------------------------------------------------------------
    def num_frozen_blocks(self) -> int:
        """Leading blocks with nothing to train, after a stem with nothing to train: they can run
        without autograd."""
        if any(p.requires_grad for n, p in self.named_parameters() if n.startswith(self.stem)):
            return 0
        n = 0
        for blk in self.blocks:
            if any(p.requires_grad for p in blk.parameters()):
                break
            n += 1
        return n

    # ---- forward ------------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, TokenLayout]:
        """Video (B, 3, T, H, W) -> the tokens after the last block (S, L, C) and their layout (timm's
        forward_features gives the tokens; the layout says where the patches are and how many frames a
        clip folded into S, which pooling needs)."""
        skip_grad = torch.is_grad_enabled() and not x.requires_grad
        n_frozen = self.num_frozen_blocks() if skip_grad else 0
        with torch.set_grad_enabled(torch.is_grad_enabled() and not (skip_grad and n_frozen > 0)):
            x, layout = self.embed(x)
            for blk in self.blocks[:n_frozen]:
                x, layout = blk(x, layout)
        for blk in self.blocks[n_frozen:]:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x, layout = checkpoint(blk, x, layout, use_reentrant=False)
            else:
                x, layout = blk(x, layout)
        return x, layout

    def forward_head(self, x: torch.Tensor, layout: TokenLayout, pre_logits: bool = False) -> torch.Tensor:
        """Tokens after the last block -> logits (B, num_classes); pre_logits=True: the features the head's
        Linear sees (B, C): pooled, normalised, dropout (timm's forward_head)."""
        return self.pooled_head(self.pool(x, layout), pre_logits)

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Video -> pooled features before `normalize_pooled` (what a linear-probe cache stores)."""
        return self.pool(*self.forward_features(x))

    def pooled_head(self, pooled: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pooled features (`forward_pooled`) -> logits: the head modules, which train with every method."""
        feats = self.head_drop(self.normalize_pooled(pooled))
        return feats if pre_logits else self.head(feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(*self.forward_features(x))

    # ---- train / eval -------------------------------------------------------------------------
    def train(self, mode: bool = True):
        super().train(mode)
        if self.tuning is not None:
            self.tuning.set_train_mode(self, mode)
        return self

    # ---- the adapter as an artefact, in PEFT's words (aptune.adapter_files) -------------------
    def save_pretrained(self, directory: str | os.PathLike, **kwargs) -> Path:
        """The adapter folder: adapter.safetensors (what trains), adapter.json, README.md (model card)."""
        return adapter_files.save_pretrained(self, directory, **kwargs)

    def push_to_hub(self, repo_id: str, private: bool = False, token: str | None = None,
                    commit_message: str | None = None, **kwargs) -> str:
        """save_pretrained into a temporary folder, then upload it to the Hub repository `repo_id`."""
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp, **kwargs)
            return adapter_files.push_to_hub(tmp, repo_id, private=private, token=token, commit_message=commit_message)

    # ---- the frozen backbone without its adapter (PEFT's disable_adapter, merge_and_unload) ---
    @contextmanager
    def disable_adapter(self):
        """Within the block, the model computes the frozen backbone's own features (its head kept):
        every block seam the method filled is emptied and every LoRA-wrapped Linear is its plain
        Linear (the same weight and bias); all comes back on exit. Refused for a method that
        changes the weights themselves (full fine-tuning) or puts modules outside the blocks (AIM)."""
        if self.tuning is not None and self.tuning.method.full_state:
            raise ConfigError(f"method {self.tuning.name!r} trains the backbone's own weights: there is no adapter "
                              "to disable")
        undo = []
        try:
            for blk in self.blocks:
                for seam in SEAMS:
                    if getattr(blk, seam) is not None:
                        undo.append((blk, seam, getattr(blk, seam)))
                        setattr(blk, seam, None)
            for parent in list(self.modules()):
                for name, child in list(parent.named_children()):
                    if isinstance(child, nn.Linear) and isinstance(getattr(child, "lora", None), nn.Module):
                        undo.append((parent, name, child))
                        setattr(parent, name, _plain_linear(child))
            left = self._method_parameters()
            if left:
                raise ConfigError(f"method {self.tuning.name!r} keeps parameters outside the block seams "
                                  f"({left[:3]}): disable_adapter cannot remove it")
            yield self
        finally:
            for owner, name, module in reversed(undo):
                setattr(owner, name, module)

    def merge_and_unload(self) -> "Backbone":
        """LoRA: fold every update (alpha / r) B A into its frozen weight and drop the method; the model is
        the plain backbone (with the trained head), as fast as one, and computes the same function."""
        wrapped = [(parent, name, child) for parent in self.modules() for name, child in parent.named_children()
                   if isinstance(child, nn.Linear) and isinstance(getattr(child, "lora", None), nn.Module)]
        folded = {id(p) for _, _, child in wrapped for p in child.lora.parameters()}
        own = set(self._method_parameters())
        rest = [n for n, p in self.named_parameters() if n in own and id(p) not in folded]
        if not wrapped or rest:
            what = "no method" if self.tuning is None else f"method {self.tuning.name!r}"
            raise ConfigError(f"merge_and_unload: only low-rank updates (LoRA) fold into the weights; this model's "
                              f"{what} has " + (f"other parameters ({rest[:3]})" if rest else "none"))
        for parent, name, child in wrapped:
            setattr(parent, name, child.merged())
        self.tuning = None
        return self

    def _method_parameters(self) -> list[str]:
        """Names of the method's own parameters still in the model (what trains, less the head)."""
        if self.tuning is None:
            return []
        head = {id(p) for m in self.head_modules() for p in m.parameters()}
        own = set(self.tuning.trainable_names)
        return [n for n, p in self.named_parameters() if n in own and id(p) not in head]


def _plain_linear(wrapped: nn.Linear) -> nn.Linear:
    """An nn.Linear over the same weight and bias Parameters as `wrapped` (no copy)."""
    plain = nn.Linear(wrapped.in_features, wrapped.out_features, bias=wrapped.bias is not None, device="meta")
    plain.weight, plain.bias = wrapped.weight, wrapped.bias
    return plain
