"""The VideoMAE family: its ViT (model.py), its checkpoint formats (formats.py) and its zoo models."""
from ..zoo import register_family, register_model
from . import formats  # noqa: F401  (registers the family's checkpoint formats)
from .model import DEPRECATED, VideoMAEConfig, VideoMAEViT, deprecated_names

register_family("videomae", VideoMAEConfig, VideoMAEViT)
for _name, _width, _depth, _heads in (("s", 384, 12, 6), ("b", 768, 12, 12), ("l", 1024, 24, 16), ("h", 1280, 32, 16)):
    register_model(f"videomae-vit-{_name}", VideoMAEConfig(embed_dim=_width, depth=_depth, num_heads=_heads))
# the embedded demo backbone (aptune/assets/videomae-demo.pth): 8 frames of 48x48 -> 4x6x6 = 144 tokens
register_model("videomae-demo", VideoMAEConfig(embed_dim=192, depth=6, num_heads=3, patch_size=8, num_frames=8,
                                               img_size=48))
# the demo's backbone (aptune/assets/vit-demo.pth, supervised on frame-shuffled clips, docs/PRETRAIN.md): 4 frames
# of 32x32, tubelet 1 -> 4x4x4 = 64 tokens, about 5x cheaper per clip than videomae-demo. Tubelet 1: a token
# spanning two frames carries their order into the frozen features. No fc_norm and a head at normal init scale:
# VideoMAE's head (LayerNorm on the mean token, init x 0.001) stalled small ViTs trained from few steps
# (docs/PRETRAIN.md, "Diagnosis"). Its old name vit-demo said "ViT", which is the supervised family's name.
register_model("videomae-demo-4f", VideoMAEConfig(embed_dim=128, depth=4, num_heads=4, patch_size=8, tubelet_size=1,
                                                  num_frames=4, img_size=32, fc_norm=False, init_scale=1.0),
               aliases=("vit-demo",))
# for tests and smoke runs: head_dim 16, 4 frames of 32x32 -> 2x4x4 = 32 tokens
register_model("tiny", VideoMAEConfig(embed_dim=64, depth=4, num_heads=4, patch_size=8, num_frames=4, img_size=32),
               tiny=True)

__getattr__ = deprecated_names(__name__)      # ViTConfig, VisionTransformer: deprecated VideoMAE names
__all__ = ["DEPRECATED", "VideoMAEConfig", "VideoMAEViT", "deprecated_names"]
