"""The baselines (VPT, AdaptFormer, LoRA) against plainly written references, and exact ViT-B
parameter counts of every method by hand. The shared contract is in test_method_contract.py."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import aptune
from aptune.methods.lora import LoRALinear, merge_lora
from aptune.models.layers import TokenLayout

from helpers import method_model, plain_model
from helpers import video as _video


def video():
    return _video(2, 4, 32)   # tiny zoo config: 2 x 4 x 4 = 32 tokens, width 64, 4 blocks


# ------------------------------------------------ exact ViT-B parameter counts, by hand
D, DEPTH, HEAD_DIM, CLASSES = 768, 12, 64, 101
HEAD = D * CLASSES + CLASSES + 2 * D          # head Linear + fc_norm = 79,205


@pytest.mark.parametrize("name, options, expected", [
    ("linear", {}, HEAD),
    ("apt", {"num_prompts": 200}, 391_205),                                       # the paper's number
    ("apt", {"num_prompts": 200}, DEPTH * (2 * 200 * HEAD_DIM + 2 * 200) + HEAD),
    ("vpt", {"num_prompts": 50}, DEPTH * 50 * D + HEAD),                          # deep: 540,005
    ("vpt", {"num_prompts": 50, "deep": False}, 50 * D + HEAD),                   # shallow
    ("adaptformer", {"bottleneck": 64}, DEPTH * (D * 64 + 64 + 64 * D + D) + HEAD),   # 1,268,837
    ("adaptformer", {"bottleneck": 1}, DEPTH * (D * 1 + 1 + 1 * D + D) + HEAD),
    ("lora", {"rank": 8}, DEPTH * 8 * (D + 3 * D) + HEAD),                        # qkv: 374,117
    ("lora", {"rank": 4, "targets": ["qkv", "proj"]}, DEPTH * 4 * (D + 3 * D + D + D) + HEAD),
    ("approx_prompt", {"num_prompts": 200, "rank": 4}, DEPTH * 159_745 + HEAD),
    ("approx_prompt", {"num_prompts": 200, "rank": 4}, DEPTH * (200 * D + 2 * 4 * D + 1) + HEAD),
])
def test_vit_b_parameter_counts(name, options, expected):
    with torch.device("meta"):   # shapes only: no 350 MB of weights to initialise
        model = aptune.create_model("videomae-vit-b", num_classes=CLASSES, method=name, **options)
    assert aptune.count_parameters(model)["trainable"] == expected


def test_vit_b_full_counts_everything():
    with torch.device("meta"):
        model = aptune.create_model("videomae-vit-b", num_classes=CLASSES, method="full")
    counts = aptune.count_parameters(model)
    assert counts["trainable"] == counts["total"] > 86_000_000


# ------------------------------------------------------------------------------ VPT
def vpt_reference(plain, x, prompts, deep, first=0, last=None):
    """Plainly written VPT on the plain backbone: cat prompts, run the block, slice them off."""
    last = len(plain.blocks) - 1 if last is None else last
    t = plain.patch_embed(x)
    t = t + plain.position_embedding(t.shape[1])
    for i, blk in enumerate(plain.blocks):
        if i in prompts and (deep or i == first):
            P = prompts[i]
            t = torch.cat([P.expand(t.shape[0], -1, -1), t], dim=1)
        t = blk(t, TokenLayout(frames=x.shape[2], grid=(1, 1, t.shape[1])))[0]
        if i in prompts and (deep or i == last):
            t = t[:, P.shape[0]:]
    return plain.head(plain.fc_norm(t.mean(dim=1)))


def _prompts(model):
    return {i: blk.tokens_in.prompts.detach() for i, blk in enumerate(model.blocks) if blk.tokens_in is not None}


@torch.no_grad()
def test_vpt_deep_and_shallow_match_reference():
    plain, x = plain_model(), video()
    deep = method_model(plain, "vpt", num_prompts=3, layers=[1, 2]).eval()
    P = _prompts(deep)
    assert sorted(P) == [1, 2] and P[1].shape == (3, 64) and not torch.equal(P[1], P[2])
    torch.testing.assert_close(deep(x), vpt_reference(plain, x, P, deep=True))

    shallow = method_model(plain, "vpt", num_prompts=3, deep=False).eval()
    Ps = _prompts(shallow)
    assert sorted(Ps) == [0] and shallow.blocks[-1].tokens_out is not None
    torch.testing.assert_close(shallow(x), vpt_reference(plain, x, Ps, deep=False))

    # shallow over blocks 1..2: prompts enter before block 1, travel through 2, leave after 2
    mid = method_model(plain, "vpt", num_prompts=3, deep=False, layers=[1, 2]).eval()
    Pm = _prompts(mid)
    ref = vpt_reference(plain, x, {1: Pm[1], 2: Pm[1]}, deep=False, first=1, last=2)
    torch.testing.assert_close(mid(x), ref)
    # deep over the same blocks with the same first prompts differs: block 2 gets fresh prompts
    deep.blocks[1].tokens_in.prompts.copy_(Pm[1])
    assert not torch.allclose(deep(x), mid(x))
    # ... but over a single block, deep and shallow are the same thing
    one_deep = method_model(plain, "vpt", num_prompts=3, layers=[2]).eval()
    one_shallow = method_model(plain, "vpt", num_prompts=3, deep=False, layers=[2]).eval()
    one_shallow.blocks[2].tokens_in.prompts.copy_(one_deep.blocks[2].tokens_in.prompts)
    torch.testing.assert_close(one_deep(x), one_shallow(x))


def test_vpt_init_and_options():
    model = aptune.create_model("tiny", method="vpt", num_prompts=500)
    P = model.blocks[0].tokens_in.prompts
    a = (6 / (3 * 8 * 8 + 64)) ** 0.5   # tiny: patch 8, width 64
    assert P.abs().max() <= a and P.abs().max() > 0.9 * a
    with pytest.raises(ValueError, match=r"vpt\.layers"):   # shallow needs a contiguous range
        aptune.create_model("tiny", method="vpt", deep=False, layers=[0, 2])
    with pytest.raises(ValueError, match=r"vpt\.prompt_dropout"):
        aptune.create_model("tiny", method="vpt", prompt_dropout=1.5)
    # prompt dropout is active in train mode only, with a mask per sample
    model = aptune.create_model("tiny", num_classes=5, method="vpt", num_prompts=20, prompt_dropout=0.5)
    x = video()[:1].expand(2, -1, -1, -1, -1)          # the same clip twice
    with torch.no_grad():
        out = model.train()(x)
        assert not torch.allclose(out[0], out[1])
        out = model.eval()(x)
        torch.testing.assert_close(out[0], out[1])


# ----------------------------------------------------------------------- AdaptFormer
@torch.no_grad()
def test_adaptformer_block_matches_formula():
    model = method_model(plain_model(), "adaptformer", bottleneck=5, scale=0.1).eval()
    blk = model.blocks[1]
    ad = blk.mlp_adapter
    assert torch.count_nonzero(ad.up.weight) == 0 and torch.count_nonzero(ad.down.weight) > 0
    assert ad.dropout.p == 0.1                     # the authors' video code: dropout 0.1 before up
    ad.up.weight.normal_(0, 0.5)
    ad.up.bias.normal_(0, 0.5)
    ad.down.bias.normal_(0, 0.5)
    x = torch.randn(2, 32, 64)
    x1 = x + blk.attn(blk.norm1(x))                                    # x': after attention
    branch = torch.relu(x1 @ ad.down.weight.T + ad.down.bias) @ ad.up.weight.T + ad.up.bias
    expected = x1 + blk.mlp(blk.norm2(x1)) + 0.1 * branch
    torch.testing.assert_close(blk(x, TokenLayout(frames=4, grid=(2, 4, 4)))[0], expected)
    with pytest.raises(ValueError, match=r"adaptformer\.bottleneck"):
        aptune.create_model("tiny", method="adaptformer", bottleneck=0)


# ------------------------------------------------------------------------------ LoRA
@torch.no_grad()
def test_lora_matches_formula_and_merge():
    plain, x = plain_model(), video()
    targets = ["qkv", "proj", "fc1", "fc2"]
    model = method_model(plain, "lora", rank=2, alpha=6.0, targets=targets, layers=[0, 3]).eval()
    scaling = 6.0 / 2
    qkv = model.blocks[0].attn.qkv
    assert isinstance(qkv, LoRALinear) and isinstance(model.blocks[1].attn.qkv, nn.Linear)
    assert not isinstance(model.blocks[1].attn.qkv, LoRALinear)
    for m in model.modules():
        if isinstance(m, LoRALinear):
            m.lora.B.normal_(0, 0.1)
    h = torch.randn(2, 32, 64)
    W, A, B = qkv.weight, qkv.lora.A, qkv.lora.B
    torch.testing.assert_close(qkv(h), h @ W.T + scaling * (h @ A.T) @ B.T)

    # the whole model equals the plain model with W + (alpha / r) B A in every target
    merged_plain = plain_model()
    merged_plain.load_state_dict(plain.state_dict())
    for i in (0, 3):
        blk, ref = model.blocks[i], merged_plain.blocks[i]
        for parent, child in (("attn", "qkv"), ("attn", "proj"), ("mlp", "fc1"), ("mlp", "fc2")):
            lin = getattr(getattr(blk, parent), child)
            getattr(getattr(ref, parent), child).weight += scaling * lin.lora.B @ lin.lora.A
    logits = model(x)
    torch.testing.assert_close(logits, merged_plain(x), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(logits, plain(x))

    merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert all("lora" not in n for n in model.tuning.trainable_names)
    torch.testing.assert_close(model(x), logits, rtol=1e-5, atol=1e-6)


def test_lora_bad_options():
    with pytest.raises(ValueError, match=r"lora\.targets"):
        aptune.create_model("tiny", method="lora", targets=["qkv", "norm1"])
    with pytest.raises(ValueError, match=r"lora\.rank"):
        aptune.create_model("tiny", method="lora", rank=0)
    model = aptune.create_model("tiny", method="lora", targets="proj")   # one name as a string
    assert isinstance(model.blocks[0].attn.proj, LoRALinear)
    assert not isinstance(model.blocks[0].attn.qkv, LoRALinear)


