"""Attention Prompt Tuning against plainly written references: forward, counts, init, options, what trains."""
import math

import pytest
import torch
import torch.nn.functional as F

import aptune
from aptune.models.layers import sinusoid_table

from helpers import randomise, video


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


