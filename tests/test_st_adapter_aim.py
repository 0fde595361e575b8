"""ST-Adapter and AIM against plain re-implementations of the official forwards (linziyi96/st-adapter
`models_adapter.py`, taoyang1122/adapt-image-models `vit_clip.py` / `vit_imagenet.py`), written here
from the papers' formulas on the raw weights; identity at init; the official parameter counts by hand."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import aptune
from aptune.errors import ConfigError

from helpers import randomise

T = 4


# ---- a plain image ViT on raw weights (the official CLIP / timm code's order of operations) ----------
def ln(x, s, name, eps):
    return F.layer_norm(x, x.shape[-1:], s[name + ".weight"], s[name + ".bias"], eps)


def lin(x, s, name):
    return x @ s[name + ".weight"].T + s[name + ".bias"]


def attention(x, s, blk, heads):
    """Multi-head softmax attention over the sequence axis of x (N, L, C), q/k/v from the fused weight."""
    N, L, C = x.shape
    q, k, v = (t.view(N, L, heads, -1).transpose(1, 2) for t in lin(x, s, blk + "attn.qkv").split(C, dim=-1))
    a = ((q @ k.transpose(-1, -2)) / math.sqrt(C // heads)).softmax(dim=-1) @ v
    return lin(a.transpose(1, 2).reshape(N, L, C), s, blk + "attn.proj")


def mlp(x, s, blk, act):
    h = lin(x, s, blk + "mlp.fc1")
    h = h * torch.sigmoid(1.702 * h) if act == "quick_gelu" else F.gelu(h)
    return lin(h, s, blk + "mlp.fc2")


def frames_tokens(s, video, patch, temporal=None, ln_pre_eps=None):
    """(B, 3, T, H, W) -> (B*T, 1 + N, C): conv per frame, [cls; x] + pos, (+ temporal), (ln_pre)."""
    B, _, t, H, W = video.shape
    x = video.permute(0, 2, 1, 3, 4).flatten(0, 1)
    x = F.conv2d(x, s["patch_embed.proj.weight"], s.get("patch_embed.proj.bias"), stride=patch)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([s["cls_token"].reshape(1, 1, -1).expand(x.shape[0], 1, -1), x], dim=1) + s["pos_embed"]
    if temporal is not None:      # AIM: '(b t) n d -> (b n) t d', + temporal_embedding, back
        L, C = x.shape[1:]
        x = x.view(B, t, L, C).transpose(1, 2).reshape(B * L, t, C) + temporal
        x = x.view(B, L, t, C).transpose(1, 2).reshape(B * t, L, C)
    if ln_pre_eps is not None:
        x = ln(x, s, "ln_pre", ln_pre_eps)
    return x


# ---- ST-Adapter, as models_adapter.py ------------------------------------------------------------
def st_adapter_ref(x, s, pre, frames):
    BT, L, C = x.shape
    B, side = BT // frames, math.isqrt(L - 1)
    w = s[pre + "conv.weight"]
    kt = w.shape[2]
    out = x.clone()
    h = lin(x[:, 1:], s, pre + "fc1")
    h = h.view(B, frames, side, side, -1).permute(0, 4, 1, 2, 3)
    h = F.conv3d(h, w, s[pre + "conv.bias"], padding=(kt // 2, 0, 0), groups=w.shape[0])
    h = h.permute(0, 2, 3, 4, 1).reshape(BT, L - 1, -1)
    out[:, 1:] += lin(h, s, pre + "fc2")
    return out


def st_clip_ref(s, video, cfg, pre_attn: bool, pre_mlp: bool):
    B, t = video.shape[0], video.shape[2]
    x = frames_tokens(s, video, cfg.patch_size, ln_pre_eps=cfg.norm_eps)
    for i in range(cfg.depth):
        blk = f"blocks.{i}."
        if pre_attn:
            x = st_adapter_ref(x, s, blk + "pre_attn.", t)
        x = x + attention(ln(x, s, blk + "norm1", cfg.norm_eps), s, blk, cfg.num_heads)
        if pre_mlp:
            x = st_adapter_ref(x, s, blk + "pre_mlp.", t)
        x = x + mlp(ln(x, s, blk + "norm2", cfg.norm_eps), s, blk, cfg.act)
    x = x.view(B, t, -1, x.shape[-1])[:, :, 0].mean(dim=1)           # class tokens averaged over time
    return lin(ln(x, s, "ln_post", cfg.norm_eps), s, "head")         # then ln_post, (dropout), fc


def state(model):
    return {k: v.detach() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("pre_attn", [False, True])
def test_st_adapter_equals_the_official_forward(pre_attn):
    model = aptune.create_model("tiny-clip", num_classes=5, method="st_adapter", pre_attn=pre_attn,
                                layers=[0, 1, 2, 3]).double()
    randomise(model)            # adapters' conv and biases off zero too
    video = torch.randn(2, 3, T, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        ref = st_clip_ref(state(model), video, model.config, pre_attn, True)
        torch.testing.assert_close(model.eval()(video), ref, rtol=1e-9, atol=1e-9)


def test_st_adapter_is_the_identity_at_init_and_leaves_class_tokens_alone():
    plain = randomise(aptune.create_model("tiny-clip", num_classes=5)).eval()
    model = aptune.create_model("tiny-clip", num_classes=5, method="st_adapter", pre_attn=True)
    model.load_state_dict(plain.state_dict(), strict=False)
    video = torch.randn(2, 3, T, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(video), plain(video), rtol=0, atol=0)
        adapter = model.blocks[1].pre_mlp
        for p in adapter.parameters():
            p.normal_()
        tokens, layout = model.embed(video)
        out = adapter(tokens, layout)
    assert torch.equal(out[:, :1], tokens[:, :1]) and not torch.allclose(out[:, 1:], tokens[:, 1:])


def test_st_adapter_sees_the_same_grid_in_both_layouts():
    frames = aptune.create_model("tiny-clip", method="st_adapter").eval()
    joint = aptune.create_model("tiny-clip-joint", method="st_adapter").eval()
    randomise(frames)
    adapter = frames.blocks[0].pre_mlp
    video = torch.randn(2, 3, T, 32, 32)
    with torch.no_grad():
        xf, lf = frames.embed(video)                                  # (B*T, 1 + 16, C)
        xj, lj = joint.embed(video)
        xj = torch.cat((xf.view(2, T, 17, -1)[:, :, 0], xf.view(2, T, 17, -1)[:, :, 1:].flatten(1, 2)), dim=1)
        of, oj = adapter(xf, lf), adapter(xj, lj)
    regrouped = torch.cat((of.view(2, T, 17, -1)[:, :, 0], of.view(2, T, 17, -1)[:, :, 1:].flatten(1, 2)), dim=1)
    torch.testing.assert_close(oj, regrouped, rtol=1e-6, atol=1e-5)


def test_st_adapter_official_counts_by_hand():
    C, w, classes = 768, 384, 174
    adapter = (C * w + w) + (w * 3 * 1 * 1 + w) + (w * C + C)       # fc1, depth-wise conv (3, 1, 1), fc2
    head = C * classes + classes
    assert adapter == 592_512 and head == 133_806

    def count(**options):
        with torch.device("meta"):
            m = aptune.create_model("clip-vit-b16", num_classes=classes, method="st_adapter", **options)
        return m, aptune.count_parameters(m)["trainable"]

    m, n = count(layers=list(range(12)))
    assert n == 12 * adapter + head == 7_243_950                       # the and the K400 script's 12 x 384
    assert set(m.tuning.trainable_names) == {f"blocks.{i}.pre_mlp.{p}" for i in range(12)
                                             for p in ("fc1.weight", "fc1.bias", "conv.weight", "conv.bias",
                                                       "fc2.weight", "fc2.bias")} | {"head.weight", "head.bias"}
    assert count()[1] == 11 * adapter + head                           # the last block's pre-MLP adapter left out
    assert count(pre_attn=True, layers=list(range(12)))[1] == 24 * adapter + head == 14_354_094   # SSv2 24 x 384
    with torch.device("meta"):
        videomae = aptune.create_model("tiny", method="st_adapter")   # mean-pooled patch tokens: every block
    assert all(b.pre_mlp is not None for b in videomae.blocks)


def test_the_left_out_adapter_could_not_train():
    """Why: with layers=[0..3] the last block's pre-MLP adapter gets an exactly zero gradient."""
    model = aptune.create_model("tiny-clip", num_classes=3, method="st_adapter", layers=[0, 1, 2, 3]).train()
    with torch.no_grad():
        for n in model.tuning.trainable_names:
            model.get_parameter(n).add_(torch.randn_like(model.get_parameter(n)) * 0.1)
    F.cross_entropy(model(torch.randn(2, 3, T, 32, 32)), torch.tensor([0, 2])).backward()
    last = [p.grad for p in model.blocks[3].pre_mlp.parameters()]
    assert all(torch.count_nonzero(g) == 0 for g in last)
    assert all(torch.count_nonzero(p.grad) > 0 for p in model.blocks[2].pre_mlp.parameters())


@pytest.mark.parametrize("bad, field", [({"kernel": [2, 1, 1]}, "kernel"), ({"width": 0}, "width"),
                                        ({"pre_attn": False, "pre_mlp": False}, "pre_mlp"),
                                        ({"pre_attn": 1}, "pre_attn")])
def test_st_adapter_options_name_the_field(bad, field):
    with pytest.raises(ConfigError, match=rf"st_adapter\.{field}"):
        aptune.methods.make_config("st_adapter", **bad)


# ---- AIM, as vit_clip.py / vit_imagenet.py -------------------------------------------------------
def aim_adapter(h, s, pre, skip):
    y = lin(F.gelu(lin(h, s, pre + "fc1")), s, pre + "fc2")
    return h + y if skip else y


def aim_ref(s, video, cfg, scale, num_tadapter):
    B, t = video.shape[0], video.shape[2]
    eps = cfg.norm_eps
    x = frames_tokens(s, video, cfg.patch_size, temporal=s["temporal_embed.weight"],
                      ln_pre_eps=eps if cfg.ln_pre else None)
    BT, L, C = x.shape
    for i in range(cfg.depth):
        blk, ad = f"blocks.{i}.", f"blocks.{i}.wrap."
        xt = x.view(B, t, L, C).transpose(1, 2).reshape(B * L, t, C)     # 'n (b t) d -> t (b n) d'
        h = ln(xt, s, blk + "norm1", eps)
        if num_tadapter == 2:
            h = aim_adapter(h, s, ad + "t_adapter_in.", skip=True)
        xt = aim_adapter(attention(h, s, blk, cfg.num_heads), s, ad + "t_adapter.", skip=False)
        x = x + xt.view(B, L, t, C).transpose(1, 2).reshape(BT, L, C)
        x = x + aim_adapter(attention(ln(x, s, blk + "norm1", eps), s, blk, cfg.num_heads), s, ad + "s_adapter.",
                            skip=True)
        xn = ln(x, s, blk + "norm2", eps)
        x = x + mlp(xn, s, blk, cfg.act) + scale * aim_adapter(xn, s, ad + "mlp_adapter.", skip=False)
    x = ln(x, s, "ln_post", eps)[:, 0]                                  # ln_post on every frame, its class token
    return lin(x.view(B, t, C).mean(dim=1), s, "head")                 # the I3D head: average over time, fc


@pytest.mark.parametrize("backbone, scale, num_tadapter", [("tiny-clip", 1.0, 2), ("tiny-clip", 0.5, 1),
                                                           ("tiny-vit", 1.0, 2)])
def test_aim_equals_the_official_forward(backbone, scale, num_tadapter):
    model = aptune.create_model(backbone, num_classes=5, method="aim", scale=scale,
                                num_tadapter=num_tadapter).double()
    randomise(model)            # every adapter's second Linear and the temporal embedding off zero
    video = torch.randn(2, 3, T, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        ref = aim_ref(state(model), video, model.config, scale, num_tadapter)
        torch.testing.assert_close(model.eval()(video), ref, rtol=1e-9, atol=1e-9)


def test_aim_at_init_is_the_image_model_on_every_frame():
    plain = randomise(aptune.create_model("tiny-clip", num_classes=5, num_frames=1)).eval()
    model = aptune.create_model("tiny-clip", num_classes=5, method="aim")
    model.load_state_dict(plain.state_dict(), strict=False)
    video = torch.randn(2, 3, T, 32, 32)
    with torch.no_grad():
        per_frame = torch.stack([plain.forward_head(*plain.forward_features(video[:, :, i:i + 1]), pre_logits=True)
                                 for i in range(T)], dim=1)
        torch.testing.assert_close(model.eval()(video), plain.head(per_frame.mean(dim=1)), rtol=0, atol=1e-5)


def test_aim_official_count_by_hand_and_what_trains():
    C, frames, classes = 768, 8, 174
    adapter = (C * (C // 4) + C // 4) + (C // 4 * C + C)              # D -> D/4 -> D
    total = 12 * 4 * adapter + frames * C + 2 * C + C * classes + classes   # adapters, temporal emb., ln_post, head
    assert adapter == 295_872 and total == 14_343_342
    with torch.device("meta"):
        m = aptune.create_model("clip-vit-b16", num_classes=classes, num_frames=frames, method="aim")
    assert aptune.count_parameters(m)["trainable"] == total
    names = set(m.tuning.trainable_names)
    assert {"temporal_embed.weight", "ln_post.weight", "ln_post.bias", "head.weight", "head.bias"} <= names
    assert all(n.startswith("blocks.") and ".wrap." in n for n in names - {"temporal_embed.weight", "ln_post.weight",
                                                                           "ln_post.bias", "head.weight", "head.bias"})
    assert "cls_token" not in names and "ln_pre.weight" not in names


def test_aim_refuses_the_joint_layout_before_any_work(tmp_path):
    from aptune.config import Config
    from aptune.engine.train import train
    with pytest.raises(ConfigError, match="'aim'.*'joint'"):
        aptune.create_model("tiny-clip-joint", method="aim")
    with pytest.raises(ConfigError, match="'aim'.*'joint'"):
        aptune.create_model("tiny", method="aim")                     # VideoMAE: joint only
    cfg = Config.from_dict({"model": {"name": "tiny-clip", "layout": "joint"}, "method": {"name": "aim"},
                            "data": {"train_list": str(tmp_path / "missing.csv"), "num_frames": 4, "img_size": 32},
                            "output": {"dir": str(tmp_path / "run")}})
    with pytest.raises(ConfigError, match=r"model\.layout: method 'aim' does not support the 'joint' token layout"):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_aim_needs_its_number_of_frames_and_keeps_its_drop_path_in_train_mode():
    model = aptune.create_model("tiny-clip", method="aim", adapter_drop_path=0.2, drop_path_rate=0.1).train()
    with pytest.raises(ValueError, match="num_frames=2"):
        model(torch.randn(1, 3, 2, 32, 32))
    own = [m for n, m in model.named_modules() if ".wrap." in n and type(m).__name__ == "DropPath"]
    assert len(own) == 3 and all(m.training for m in own)              # the adapter branches' (block 0: rate 0)
    assert all(b.drop_path.p > 0 and not b.drop_path.training for b in model.blocks[1:])   # the frozen blocks' off
    with pytest.raises(ConfigError, match=r"aim\.num_tadapter"):
        aptune.methods.make_config("aim", num_tadapter=3)
