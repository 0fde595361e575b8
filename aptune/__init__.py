"""aptune: Attention Prompt Tuning and parameter-efficient baselines for video transformers."""
from .api import (
                  count_parameters,
                  create_model,
                  from_pretrained,
                  load_adapter,
                  print_trainable_parameters,
                  push_to_hub,
                  save_adapter,
                  save_pretrained,
)
from .errors import AptuneError
from .methods import apply_method, list_methods
from .models import Backbone, VideoMAEConfig, VideoMAEViT, get_config, list_models
from .models.videomae import deprecated_names
from .multitask import MultiTaskModel, load_adapters
from .profiling import count_flops
from .version import __version__
from .workflows import EvalResult, Prediction, TrainResult, evaluate, predict, train

__getattr__ = deprecated_names(__name__)      # ViTConfig, VisionTransformer: deprecated VideoMAE names

__all__ = ["AptuneError", "Backbone", "EvalResult", "MultiTaskModel", "Prediction", "TrainResult", "VideoMAEConfig",
           "VideoMAEViT", "__version__", "apply_method", "count_flops", "count_parameters", "create_model",
           "evaluate", "from_pretrained", "get_config", "list_methods", "list_models", "load_adapter", "load_adapters",
           "predict", "print_trainable_parameters", "push_to_hub", "save_adapter", "save_pretrained", "train"]
