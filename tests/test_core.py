"""The backbone and APT against plainly written references, and the public API contract."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import aptune
from aptune.models.layers import sinusoid_table


def plain_attention(attn, x, pk=None, pv=None):
    """VideoMAE attention written out: explicit softmax over [K; Pk], prompts shared by heads."""
    B, N, C = x.shape
    H, hd = attn.num_heads, attn.head_dim
    bias = torch.cat([attn.q_bias, torch.zeros_like(attn.v_bias), attn.v_bias])
    qkv = x @ attn.qkv.weight.T + bias
    q, k, v = qkv.split(C, dim=-1)
    q, k, v = (t.reshape(B, N, H, hd).transpose(1, 2) for t in (q, k, v))
    if pk is not None:
        k = torch.cat([k, pk.expand(B, H, -1, -1)], dim=2)
        v = torch.cat([v, pv.expand(B, H, -1, -1)], dim=2)
    w = torch.softmax((q / math.sqrt(hd)) @ k.transpose(-1, -2), dim=-1)
    out = (w @ v).transpose(1, 2).reshape(B, N, C)
    return out @ attn.proj.weight.T + attn.proj.bias


def plain_apt_forward(model, video):
    """The whole APT model written plainly from its parameters (eval mode, no dropout)."""
    c = model.config
    x = F.conv3d(video, model.patch_embed.proj.weight, model.patch_embed.proj.bias,
                 stride=(c.tubelet_size, c.patch_size, c.patch_size)).flatten(2).transpose(1, 2)
    x = x + sinusoid_table(x.shape[1], c.embed_dim)
    for blk in model.blocks:
        pk = pv = None
        if blk.kv_prompts is not None:
            s = blk.kv_prompts.scale
            pk = blk.kv_prompts.key * torch.clamp(s[0], min=1)[:, None]
            pv = blk.kv_prompts.value * torch.clamp(s[1], min=1)[:, None]
        h = F.layer_norm(x, (c.embed_dim,), blk.norm1.weight, blk.norm1.bias, c.norm_eps)
        x = x + plain_attention(blk.attn, h, pk, pv)
        h = F.layer_norm(x, (c.embed_dim,), blk.norm2.weight, blk.norm2.bias, c.norm_eps)
        x = x + blk.mlp.fc2(F.gelu(blk.mlp.fc1(h)))
    f = F.layer_norm(x.mean(1), (c.embed_dim,), model.fc_norm.weight, model.fc_norm.bias, c.norm_eps)
    return f @ model.head.weight.T + model.head.bias


def randomise(model):
    """Non-trivial values everywhere (biases, norms, head, scales above 1)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1.0 if p.ndim == 1 and p.shape[0] > 0 else 0.0))
    return model


def video(b=2, t=4, s=32):
    return torch.randn(b, 3, t, s, s)


def test_sinusoid_table_matches_numpy_formula():
    n, d = 50, 64
    pos = np.arange(n)[:, None] / np.power(10000, 2 * (np.arange(d)[None, :] // 2) / d)
    ref = np.where(np.arange(d)[None, :] % 2 == 0, np.sin(pos), np.cos(pos))
    assert np.allclose(sinusoid_table(n, d)[0].numpy(), ref, atol=1e-6)


@pytest.mark.parametrize("num_prompts", [0, 3])
def test_apt_model_equals_plain_reference(num_prompts):
    model = randomise(aptune.create_model("tiny", num_classes=7, method="apt", num_prompts=num_prompts)).eval()
    with torch.no_grad():
        for blk in model.blocks:  # scales on both sides of 1, so max(s, 1) matters
            blk.kv_prompts.scale.copy_(torch.rand_like(blk.kv_prompts.scale) * 2)
    x = video()
    with torch.no_grad():
        assert torch.allclose(model(x), plain_apt_forward(model, x), atol=1e-4, rtol=1e-4)


def test_zero_prompts_equal_base_but_zero_valued_prompts_do_not():
    base = aptune.create_model("tiny", num_classes=5).eval()
    x = video()
    apt0 = aptune.create_model("tiny", num_classes=5, method="apt", num_prompts=0).eval()
    apt0.load_state_dict(base.state_dict(), strict=False)
    zeros = aptune.create_model("tiny", num_classes=5, method="apt", num_prompts=4).eval()
    zeros.load_state_dict(base.state_dict(), strict=False)
    with torch.no_grad():
        for blk in zeros.blocks:
            blk.kv_prompts.key.zero_()
            blk.kv_prompts.value.zero_()
        # make the head sensitive so that a change in features shows in the logits
        base.head.weight.normal_()
        for m in (apt0, zeros):
            m.head.weight.copy_(base.head.weight)
        assert torch.allclose(apt0(x), base(x), atol=1e-6)
        # a zero key still takes softmax mass, so the output moves
        assert not torch.allclose(zeros(x), base(x), atol=1e-4)


def test_apt_parameter_count_matches_paper_convention():
    model = aptune.create_model("videomae-vit-b", num_classes=101, method="apt", num_prompts=200)
    expected = (768 * 101 + 101) + 2 * 768 + 12 * 200 * (2 * 64 + 2)
    assert expected == 391_205
    assert aptune.count_parameters(model)["trainable"] == expected


def test_apt_init_bound_and_scale():
    model = aptune.create_model("videomae-vit-b", num_classes=10, method="apt", num_prompts=300)
    p = model.blocks[3].kv_prompts
    a = math.sqrt(6.0 / (3 * 16 * 16 + 64))
    assert p.key.shape == (300, 64) and p.value.shape == (300, 64) and p.scale.shape == (2, 300)
    assert p.key.abs().max() <= a and p.key.abs().max() > 0.9 * a
    assert torch.equal(p.scale, torch.ones(2, 300))


def test_reparam_off_has_no_scale_and_layers_select_blocks():
    model = aptune.create_model("tiny", num_classes=3, method="apt", num_prompts=2, reparam=False, layers=[2, 3])
    assert [i for i, b in enumerate(model.blocks) if b.kv_prompts is not None] == [2, 3]
    assert model.blocks[2].kv_prompts.scale is None
    assert sorted(model.tuning.trainable_names) == sorted(
        ["blocks.2.kv_prompts.key", "blocks.2.kv_prompts.value", "blocks.3.kv_prompts.key",
         "blocks.3.kv_prompts.value", "fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"])


@pytest.mark.parametrize("opts,field", [
    (dict(layers=[0, 9]), "apt.layers"),
    (dict(layers=[0, 2]), "apt.layers"),
    (dict(num_prompts=-1), "apt.num_prompts"),
    (dict(prompt_dropout=1.5), "apt.prompt_dropout"),
    (dict(num_promts=5), "num_promts"),
])
def test_bad_apt_options_name_the_field(opts, field):
    with pytest.raises(ValueError, match=field):
        aptune.create_model("tiny", num_classes=3, method="apt", **opts)


def test_unknown_model_and_method_are_named():
    with pytest.raises(KeyError, match="videomae-vit-q"):
        aptune.create_model("videomae-vit-q")
    with pytest.raises(KeyError, match="prompty"):
        aptune.create_model("tiny", method="prompty")
    with pytest.raises(ValueError, match="num_frames"):
        aptune.create_model("tiny", num_frames=5)


def test_gradients_reach_only_what_trains_and_backbone_stays_in_eval():
    model = aptune.create_model("tiny", num_classes=4, method="apt", num_prompts=3, drop_path_rate=0.2,
                                head_dropout=0.5)
    model.train()
    assert all(not m.training for m in model.blocks[0].modules() if m.__class__.__name__ in ("Dropout", "DropPath")
               and m is not model.blocks[0].kv_prompts.dropout)
    assert model.blocks[0].kv_prompts.training and model.blocks[0].kv_prompts.dropout.training
    assert model.head_drop.training  # the head trains, so its dropout is on
    assert not model.blocks[1].drop_path.training and not model.pos_drop.training
    loss = model(video()).logsumexp(-1).sum()
    loss.backward()
    names = set(model.tuning.trainable_names)
    for n, p in model.named_parameters():
        assert (p.grad is not None) == (n in names), n
    model.eval()
    assert not model.blocks[0].kv_prompts.training


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


def test_adapter_round_trip(tmp_path):
    torch.manual_seed(0)
    model = randomise(aptune.create_model("tiny", num_classes=6, method="apt", num_prompts=5)).eval()
    backbone = tmp_path / "backbone.pt"
    torch.save({k: v for k, v in model.state_dict().items() if k not in model.tuning.trainable_names}, backbone)
    aptune.save_adapter(model, tmp_path / "adapter", class_names=[f"c{i}" for i in range(6)])
    files = sorted(p.name for p in (tmp_path / "adapter").iterdir())
    assert files == ["adapter.json", "adapter.safetensors"]
    meta = json.loads((tmp_path / "adapter" / "adapter.json").read_text())
    assert meta["method"] == "apt" and meta["method_config"]["num_prompts"] == 5
    loaded = aptune.load_adapter(tmp_path / "adapter", checkpoint=backbone).eval()
    x = video()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert loaded.class_names == [f"c{i}" for i in range(6)]


def test_adapter_with_wrong_tensors_is_refused(tmp_path):
    from safetensors.torch import save_file
    model = aptune.create_model("tiny", num_classes=6, method="apt", num_prompts=5)
    aptune.save_adapter(model, tmp_path)
    save_file({"head.weight": torch.zeros(6, 64)}, str(tmp_path / "adapter.safetensors"))
    with pytest.raises(ValueError, match="missing"):
        aptune.load_adapter(tmp_path)
    with pytest.raises(FileNotFoundError, match="adapter.json"):
        aptune.load_adapter(tmp_path / "nowhere")


def test_other_clip_sizes_rebuild_positions():
    model = aptune.create_model("tiny", num_classes=3, method="apt", num_prompts=2).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 8, 48, 48))
    assert out.shape == (1, 3)
    with pytest.raises(ValueError, match="divisible"):
        model(torch.randn(1, 3, 5, 32, 32))


def test_vit_b_apt400_adapter_is_small_and_reloads_exactly(tmp_path):
    """The paper-sized adapter: ViT-B, 101 classes, APT-400 -> under 3.5 MB, identical logits."""
    from safetensors.torch import save_file
    model = aptune.create_model("videomae-vit-b", num_classes=101, method="apt", num_prompts=400).eval()
    with torch.no_grad():
        for n in model.tuning.trainable_names:
            model.get_parameter(n).normal_(0, 0.1)
    backbone = tmp_path / "backbone.safetensors"
    save_file({k: v for k, v in model.state_dict().items() if k not in model.tuning.trainable_names}, str(backbone))
    aptune.save_adapter(model, tmp_path / "adapter")
    size = sum(p.stat().st_size for p in (tmp_path / "adapter").iterdir())
    assert aptune.count_parameters(model)["trainable"] == 768 * 101 + 101 + 2 * 768 + 12 * 400 * (2 * 64 + 2)
    assert size < 3.5e6, size
    loaded = aptune.load_adapter(tmp_path / "adapter", checkpoint=backbone).eval()
    x = torch.randn(1, 3, 2, 32, 32)   # a small clip: positions are rebuilt, the weights are the point
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
