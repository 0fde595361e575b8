from .backbone import Backbone
from .layers import TokenLayout
from .videomae import VisionTransformer, ViTConfig
from .zoo import build_backbone, get_config, list_models

__all__ = ["Backbone", "TokenLayout", "ViTConfig", "VisionTransformer", "build_backbone", "get_config",
           "list_models"]
