"""The backbone contract (VideoMAE family): positions, frozen prefix, clip sizes, names, and a toy method that
uses the seams through the engine without touching aptune (the contract is real)."""
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn as nn

import aptune
from aptune.methods import register, unregister
from aptune.models.layers import sinusoid_table

from helpers import randomise, video


def test_sinusoid_table_matches_numpy_formula():
    n, d = 50, 64
    pos = np.arange(n)[:, None] / np.power(10000, 2 * (np.arange(d)[None, :] // 2) / d)
    ref = np.where(np.arange(d)[None, :] % 2 == 0, np.sin(pos), np.cos(pos))
    assert np.allclose(sinusoid_table(n, d)[0].numpy(), ref, atol=1e-6)


def test_unknown_model_and_method_are_named():
    with pytest.raises(KeyError, match="videomae-vit-q"):
        aptune.create_model("videomae-vit-q")
    with pytest.raises(KeyError, match="prompty"):
        aptune.create_model("tiny", method="prompty")
    with pytest.raises(ValueError, match="num_frames"):
        aptune.create_model("tiny", num_frames=5)


def test_frozen_prefix_runs_without_autograd_and_keeps_gradients():
    x = video()
    torch.manual_seed(3)
    last2 = randomise(aptune.create_model("tiny", num_classes=4, method="apt", num_prompts=3, layers=[2, 3],
                                          prompt_dropout=0.0))
    assert last2.num_frozen_blocks() == 2
    seen = []
    last2.blocks[1].register_forward_hook(lambda m, i, o: seen.append(o[0].requires_grad))
    last2(x).sum().backward()
    assert seen == [False]
    fast = {n: p.grad.clone() for n, p in last2.named_parameters() if p.grad is not None}
    last2.zero_grad()
    # the same gradients when every block runs under autograd (input requiring grad disables the skip)
    last2(x.clone().requires_grad_(True)).sum().backward()
    for n, g in fast.items():
        assert torch.allclose(g, last2.get_parameter(n).grad, atol=1e-5), n


def test_other_clip_sizes_rebuild_positions():
    model = aptune.create_model("tiny", num_classes=3, method="apt", num_prompts=2).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 8, 48, 48))
    assert out.shape == (1, 3)
    with pytest.raises(ValueError, match="divisible"):
        model(torch.randn(1, 3, 5, 32, 32))


# ---- a toy method written here, against the seams only: the contract is real ---------------------
@dataclasses.dataclass
class TimeBiasConfig:
    """A learnable bias per token time step, added to the residual stream before attention."""
    steps: int = 2

    def __post_init__(self):
        if self.steps < 1:
            raise aptune.errors.ConfigError(f"time_bias.steps: must be >= 1, got {self.steps}")


class TimeBias(nn.Module):
    """pre_attn seam: patch tokens (B, N, C) -> + bias[t] per time step t of the layout's grid."""

    def __init__(self, steps: int, dim: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(steps, dim))
        self.seen = []

    def forward(self, x, layout):
        self.seen.append(layout)
        grid = layout.patch_grid(x[:, layout.patch_start:])               # (B, C, t, h, w)
        grid = grid + self.bias.T[None, :, :, None, None]                 # bias (t, C) -> (1, C, t, 1, 1)
        return torch.cat((x[:, :layout.patch_start], layout.from_grid(grid)), dim=1)


@pytest.fixture
def time_bias():
    @register("time_bias", TimeBiasConfig, "toy: a bias per time step before each attention")
    def apply(model, cfg):
        added = []
        for blk in model.blocks:
            blk.pre_attn = TimeBias(cfg.steps, model.embed_dim)
            added.append(blk.pre_attn)
        return added
    yield
    unregister("time_bias")


def test_a_toy_method_defined_in_a_test_trains_through_the_engine(tmp_path, time_bias):
    from aptune.config import Config
    from aptune.engine.train import train

    from engine_data import TensorVideos, tiny_cfg
    bad = Config.from_dict({"model": {"name": "tiny"}, "method": {"name": "time_bias", "steps": 0},
                            "data": {"num_frames": 4, "img_size": 32}})
    with pytest.raises(ValueError, match="time_bias.steps"):          # its config checks itself before any work
        bad.validate(need_train=False)
    # 4 epochs: after 3 (18 steps, the first at lr 0 in the authors' warm-up) the 6 test videos were at chance
    cfg = tiny_cfg(tmp_path, method="time_bias", optim={"epochs": 4, "lr": 4.0})
    cfg.method.options = {"steps": 2}
    data = {"train": TensorVideos(24), "val": TensorVideos(6, mode="val"), "test": TensorVideos(6, mode="test")}
    out = train(cfg, datasets=data)
    model = out["model"]
    blk = model.blocks[0].pre_attn
    assert isinstance(blk, TimeBias) and blk.seen[0].grid == (2, 4, 4) and blk.seen[0].frames == 4
    assert blk.bias.abs().sum() > 0                                    # it trained
    assert any(n.startswith("blocks.0.pre_attn.bias") for n in model.tuning.trainable_names)
    assert out["test"]["video_top1"] > 100 / 3 + 10                     # learns the 3 prototypes
    loaded = aptune.load_adapter(out["adapter_dir"], allow_random_backbone=True)   # the recorded seeded init
    assert loaded.tuning.name == "time_bias"
    with torch.no_grad():
        x = video()
        assert torch.equal(loaded.blocks[1].pre_attn.bias, model.blocks[1].pre_attn.bias)
        torch.testing.assert_close(loaded.eval()(x), model.eval()(x))


def test_fc_norm_option_keeps_videomae_default():
    from aptune.models.videomae import VideoMAEConfig
    # the default is VideoMAE's head: LayerNorm on the mean token, head init x 0.001
    assert VideoMAEConfig().fc_norm is True and VideoMAEConfig().init_scale == 0.001
    base = dict(embed_dim=32, depth=1, num_heads=2, patch_size=8, num_frames=4, img_size=16, num_classes=3)
    torch.manual_seed(0)
    on = aptune.create_model(VideoMAEConfig(**base))
    torch.manual_seed(0)
    off = aptune.create_model(VideoMAEConfig(**base, fc_norm=False))
    assert isinstance(on.fc_norm, torch.nn.LayerNorm) and not any("fc_norm" in k for k in off.state_dict())
    x = torch.randn(2, 3, 4, 16, 16)
    pooled = off.forward_pooled(x)
    # without fc_norm the head sees the mean token itself; with it, that token standardised
    def features(net):
        return net.forward_head(*net.forward_features(x), pre_logits=True)
    torch.testing.assert_close(features(off), pooled)
    mu, var = pooled.mean(-1, keepdim=True), pooled.var(-1, unbiased=False, keepdim=True)
    torch.testing.assert_close(features(on), (pooled - mu) / torch.sqrt(var + 1e-6), rtol=1e-4, atol=1e-4)
    off.set_norm_eps(1e-5, None)                                   # no LayerNorm to change: no error


def test_what_was_written_with_the_old_names_still_loads():
    """The demo's backbone `vit-demo` (a VideoMAE-family model, not the family "vit") is `videomae-demo-4f`, and
    VideoMAE's ViT is `VideoMAEConfig` / `VideoMAEViT`: presets, checkpoints, snapshots and code that use the
    old names keep working (the classes with a DeprecationWarning)."""
    import warnings

    from aptune.config import Config
    from aptune.engine.build import resolve_checkpoint
    from aptune.engine.resume import resume_changes
    from aptune.models.zoo import get_config, list_models
    assert get_config("vit-demo") == get_config("videomae-demo-4f") and "vit-demo" not in list_models()
    old = Config.from_dict({"model": {"name": "vit-demo", "checkpoint": "embedded"},
                            "data": {"num_frames": 4, "img_size": 32}})
    old.validate(need_train=False, check_files=False)
    path = resolve_checkpoint(old.model)
    assert path.endswith("vit-demo.pth")
    a = aptune.create_model("vit-demo", num_classes=3, checkpoint=path).state_dict()
    b = aptune.create_model("videomae-demo-4f", num_classes=3, checkpoint=path).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if not k.startswith("head."))
    # a snapshot written under the old name resumes with a preset that says the new one: not a change
    new = Config.from_dict({**old.to_dict(), "model": {**old.to_dict()["model"], "name": "videomae-demo-4f"}})
    assert resume_changes(old, new) == ([], [])
    assert resume_changes(old, Config.from_dict({**new.to_dict(), "model": {"name": "tiny"}}))[0]
    with pytest.warns(DeprecationWarning, match="use VideoMAEConfig"):
        from aptune import ViTConfig
    with pytest.warns(DeprecationWarning, match="use VideoMAEViT"):
        from aptune.models import VisionTransformer
    assert ViTConfig is aptune.VideoMAEConfig and VisionTransformer is aptune.VideoMAEViT
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net = VisionTransformer(ViTConfig(embed_dim=32, depth=1, num_heads=2, patch_size=8, num_frames=4, img_size=16))
    assert net.family == "videomae" and type(net).__name__ == "VideoMAEViT"
    with pytest.raises(AttributeError, match="module 'aptune' has no attribute 'ViTConfg'"):
        aptune.ViTConfg  # noqa: B018


def test_a_family_is_one_module_that_registers_itself(tmp_path):
    """A family registered from outside the package (its config, backbone and a zoo model: what a family's
    module does on import) builds by name, takes a method, and its adapter saves and loads back: nothing
    else in aptune needs to know it."""
    from aptune.models.videomae import VideoMAEConfig, VideoMAEViT
    from aptune.models.zoo import register_family, register_model, tiny_models, unregister_family

    @dataclasses.dataclass
    class ToyConfig(VideoMAEConfig):
        family = "toy"

    class Toy(VideoMAEViT):
        family = "toy"

    register_family("toy", ToyConfig, Toy)
    try:
        register_model("toy-tiny", ToyConfig(embed_dim=32, depth=2, num_heads=2, patch_size=8, num_frames=4,
                                             img_size=16, num_classes=3), tiny=True)
        assert "toy-tiny" in aptune.list_models() and "toy-tiny" in tiny_models()
        torch.manual_seed(0)
        model = aptune.create_model("toy-tiny", method="lora", rank=2)
        assert type(model) is Toy and model.family == "toy"
        model.save_pretrained(tmp_path / "adapter", backbone={"path": None, "random_seed": 0})
        again = aptune.load_adapter(tmp_path / "adapter", allow_random_backbone=True).eval()
        x = torch.randn(1, 3, 4, 16, 16)
        torch.testing.assert_close(again(x), model.eval()(x))
    finally:
        unregister_family("toy")
    assert "toy-tiny" not in aptune.list_models() and "toy-tiny" not in tiny_models()
