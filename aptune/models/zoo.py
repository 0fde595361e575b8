"""Named backbone configurations and the backbone families.

    get_config(name, **overrides)   a fresh config of a zoo model
    build_backbone(config)          the backbone module of that config's family
    config_from_dict(family, d)     a config read back from an adapter file
"""
from __future__ import annotations

from dataclasses import replace

from ..errors import ConfigError, UnknownNameError
from .image_vit import CLIPViTConfig, ImageViT, SupViTConfig
from .videomae import VideoMAEConfig, VideoMAEViT

# family name -> (config class, backbone class); a new family is one entry here
FAMILIES: dict[str, tuple[type, type]] = {
    "videomae": (VideoMAEConfig, VideoMAEViT),
    "clip": (CLIPViTConfig, ImageViT),     # OpenAI CLIP's vision tower (image_vit.py)
    "vit": (SupViTConfig, ImageViT),       # the supervised timm / Google ViT
}

ZOO: dict[str, object] = {
    "videomae-vit-s": VideoMAEConfig(embed_dim=384, depth=12, num_heads=6),
    "videomae-vit-b": VideoMAEConfig(embed_dim=768, depth=12, num_heads=12),
    "videomae-vit-l": VideoMAEConfig(embed_dim=1024, depth=24, num_heads=16),
    "videomae-vit-h": VideoMAEConfig(embed_dim=1280, depth=32, num_heads=16),
    # the embedded demo backbone (aptune/assets/videomae-demo.pth): 8 frames of 48x48 -> 4x6x6 = 144 tokens
    "videomae-demo": VideoMAEConfig(embed_dim=192, depth=6, num_heads=3, patch_size=8, num_frames=8, img_size=48),
    # the demo's backbone (aptune/assets/vit-demo.pth, supervised on frame-shuffled clips, docs/PRETRAIN.md;
    # its old name vit-demo is an alias):
    # 4 frames of 32x32, tubelet 1 -> 4x4x4 = 64 tokens, about 5x cheaper per clip than videomae-demo. Tubelet 1:
    # a token spanning two frames carries their order into the frozen features. No fc_norm and a head at normal
    # init scale: VideoMAE's head (LayerNorm on the mean token, init x 0.001) stalled small ViTs trained from few
    # steps (docs/PRETRAIN.md, "Diagnosis")
    "videomae-demo-4f": VideoMAEConfig(embed_dim=128, depth=4, num_heads=4, patch_size=8, tubelet_size=1, num_frames=4,
                                  img_size=32, fc_norm=False, init_scale=1.0),
    # tiny models for tests and smoke runs: head_dim 16, 4 frames of 32x32 -> 2x4x4 = 32 tokens
    "tiny": VideoMAEConfig(embed_dim=64, depth=4, num_heads=4, patch_size=8, num_frames=4, img_size=32),
    # image backbones (the APT paper's Table 6), 8 frames of 224, each frame its own sequence by default
    "clip-vit-b16": CLIPViTConfig(embed_dim=768, depth=12, num_heads=12, patch_size=16),
    "clip-vit-l14": CLIPViTConfig(embed_dim=1024, depth=24, num_heads=16, patch_size=14),
    "vit-b16": SupViTConfig(embed_dim=768, depth=12, num_heads=12, patch_size=16),
    # their tiny versions: 4 frames of 32x32 -> 4 x (1 + 16) tokens
    "tiny-clip": CLIPViTConfig(embed_dim=64, depth=4, num_heads=4, patch_size=8, num_frames=4, img_size=32),
    "tiny-clip-joint": CLIPViTConfig(embed_dim=64, depth=4, num_heads=4, patch_size=8, num_frames=4, img_size=32,
                                     layout="joint"),
    "tiny-vit": SupViTConfig(embed_dim=64, depth=4, num_heads=4, patch_size=8, num_frames=4, img_size=32),
}

# older names that configs, adapters and checkpoints written before a rename still use
ALIASES = {"vit-demo": "videomae-demo-4f"}     # a VideoMAE-family model; the family "vit" is timm's supervised ViT


def list_models() -> list[str]:
    return sorted(ZOO)


def canonical_name(name: str) -> str:
    """The zoo name `name` stands for (itself, or what its alias names)."""
    return ALIASES.get(name, name)


def is_model(name) -> bool:
    """A zoo model's name or alias."""
    return isinstance(name, str) and canonical_name(name) in ZOO


def get_config(name: str, **overrides):
    if not is_model(name):
        raise UnknownNameError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return replace(ZOO[canonical_name(name)], **overrides)


def family_of(config) -> str:
    return type(config).family


def build_backbone(config):
    """The backbone module for `config` (any family's config class)."""
    for cfg_cls, net_cls in FAMILIES.values():
        if isinstance(config, cfg_cls):
            return net_cls(config)
    raise ConfigError(f"no backbone family for config {type(config).__name__}; families: {', '.join(FAMILIES)}")


def config_from_dict(family: str, d: dict):
    if family not in FAMILIES:
        raise ConfigError(f"unknown backbone family {family!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[family][0].from_dict(d)
