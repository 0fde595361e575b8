from .backbone import Backbone
from .layers import TokenLayout
from .videomae import VideoMAEConfig, VideoMAEViT, deprecated_names
from .zoo import build_backbone, get_config, list_models

__all__ = ["Backbone", "TokenLayout", "VideoMAEConfig", "VideoMAEViT", "build_backbone", "get_config",
           "list_models"]

__getattr__ = deprecated_names(__name__)      # ViTConfig, VisionTransformer: deprecated VideoMAE names
