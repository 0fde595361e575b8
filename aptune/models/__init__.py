"""Backbones. A family is one module that registers itself (zoo.py): its config and backbone classes, its
checkpoint formats and its zoo models; a new family is that module and one import here."""
from . import image_vit, videomae  # noqa: F401  (the families register themselves)
from .backbone import Backbone
from .layers import TokenLayout
from .videomae import VideoMAEConfig, VideoMAEViT, deprecated_names
from .zoo import build_backbone, get_config, list_families, list_models

__getattr__ = deprecated_names(__name__)      # ViTConfig, VisionTransformer: deprecated VideoMAE names

__all__ = ["Backbone", "TokenLayout", "VideoMAEConfig", "VideoMAEViT", "build_backbone", "get_config",
           "list_families", "list_models"]
