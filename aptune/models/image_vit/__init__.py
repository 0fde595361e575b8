"""The image ViT families, "clip" (OpenAI CLIP's vision tower) and "vit" (the supervised timm / Google
ViT): one backbone run on video (model.py), their checkpoint formats (formats.py) and zoo models."""
from ..zoo import register_family, register_model
from . import formats  # noqa: F401  (registers the families' checkpoint formats)
from .model import CLIP_MEAN, CLIP_STD, HALF, CLIPViTConfig, ImageViT, ImageViTConfig, SupViTConfig, TemporalEmbedding

register_family("clip", CLIPViTConfig, ImageViT)
register_family("vit", SupViTConfig, ImageViT)
# the APT paper's Table 6: 8 frames of 224, each frame its own sequence by default
register_model("clip-vit-b16", CLIPViTConfig(embed_dim=768, depth=12, num_heads=12, patch_size=16))
register_model("clip-vit-l14", CLIPViTConfig(embed_dim=1024, depth=24, num_heads=16, patch_size=14))
register_model("vit-b16", SupViTConfig(embed_dim=768, depth=12, num_heads=12, patch_size=16))
# for tests and smoke runs: 4 frames of 32x32 -> 4 x (1 + 16) tokens
_TINY = dict(embed_dim=64, depth=4, num_heads=4, patch_size=8, num_frames=4, img_size=32)
register_model("tiny-clip", CLIPViTConfig(**_TINY), tiny=True)
register_model("tiny-clip-joint", CLIPViTConfig(**_TINY, layout="joint"), tiny=True)
register_model("tiny-vit", SupViTConfig(**_TINY), tiny=True)

__all__ = ["CLIP_MEAN", "CLIP_STD", "HALF", "CLIPViTConfig", "ImageViT", "ImageViTConfig", "SupViTConfig",
           "TemporalEmbedding"]
