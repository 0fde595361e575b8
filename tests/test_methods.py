"""Every registered method against the method contract, plus method-specific references.

The contract suite is parametrised over `aptune.list_methods()`, so a new method is covered
the moment it registers; it must then add an identity recipe to IDENTITY below.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import aptune
from aptune.methods import get_method
from aptune.methods.lora import LoRALinear, merge_lora
from aptune.models.layers import TokenLayout

NUM_CLASSES = 5
VIDEO = (2, 3, 4, 32, 32)   # tiny zoo config: 2 x 4 x 4 = 32 tokens, width 64, 4 blocks


def _zero_approx_prompts(model):
    for blk in model.blocks:
        if blk.attn_adapter is not None:
            blk.attn_adapter.prompts.data.zero_()


# method -> (options, function that puts the applied method at its identity point, or None)
IDENTITY = {
    "apt": ({"num_prompts": 0}, None),
    "vpt": ({"num_prompts": 0}, None),       # VPT's init is not the identity; with no prompts it is
    "adaptformer": ({}, None),               # up projection starts at zero
    "lora": ({"targets": ["qkv", "proj", "fc1", "fc2"]}, None),   # B starts at zero
    "approx_prompt": ({}, _zero_approx_prompts),                  # P = 0 gives A = 0, exp(0) = 1
    "linear": ({}, None),
    "full": ({}, None),
}


def plain_model(**kw):
    """The tiny backbone with non-zero biases everywhere (q/v biases included)."""
    model = aptune.create_model("tiny", num_classes=NUM_CLASSES, **kw)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.02)
    return model.eval()


def method_model(plain, name, **options):
    """Method `name` applied to a copy of `plain`'s weights."""
    model = aptune.create_model("tiny", num_classes=NUM_CLASSES, method=name, **options)
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected, f"{name} renamed backbone parameters: {unexpected[:3]}"
    own = set(model.tuning.trainable_names) if name != "full" else set()
    assert set(missing) <= own, f"{name}: backbone keys missing {sorted(set(missing) - own)[:3]}"
    return model


def video():
    return torch.randn(*VIDEO)


# ---------------------------------------------------------------- the contract, per method
@pytest.mark.parametrize("name", aptune.list_methods())
def test_identity_at_zero_init(name):
    if name not in IDENTITY:
        pytest.fail(f"method {name!r} has no identity recipe: add one to IDENTITY in tests/test_methods.py")
    options, setup = IDENTITY[name]
    plain = plain_model()
    model = method_model(plain, name, **options)
    if setup is not None:
        setup(model)
    x = video()
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), plain(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", aptune.list_methods())
def test_gradients_exactly_on_trainable(name):
    model = method_model(plain_model(), name).train()
    loss = F.cross_entropy(model(video()), torch.tensor([1, 3]))
    loss.backward()
    trainable = set(model.tuning.trainable_names)
    assert {"fc_norm.weight", "head.weight", "head.bias"} <= trainable
    for n, p in model.named_parameters():
        if n in trainable:
            assert p.requires_grad and p.grad is not None, f"{name}: {n} trains but got no gradient"
        else:
            assert not p.requires_grad and p.grad is None, f"{name}: frozen {n} got a gradient"
    if name not in ("linear", "full"):
        assert any(not n.startswith(("fc_norm.", "head.")) for n in trainable), f"{name} adds nothing to train"


def _adapter_prefixes(model):
    return [n for n, m in model.named_modules() if getattr(m, "is_adapter", False)]


@pytest.mark.parametrize("name", aptune.list_methods())
def test_frozen_backbone_stays_in_eval(name):
    options = {"vpt": {"prompt_dropout": 0.1}, "adaptformer": {"dropout": 0.1},
               "lora": {"dropout": 0.1}}.get(name, {})
    model = aptune.create_model("tiny", num_classes=NUM_CLASSES, drop_path_rate=0.2, method=name, **options)
    model.train()
    prefixes = _adapter_prefixes(model)
    assert prefixes, f"{name}: no module flagged is_adapter"
    n_method_dropouts = 0
    for n, m in model.named_modules():
        if n == "head_drop":   # the head's own dropout: the head trains
            continue
        inside = any(n == p or n.startswith(p + ".") or p == "" for p in prefixes)
        assert m.training == inside, f"{name}: {n or 'model'} ({type(m).__name__}) training={m.training}"
        if inside and isinstance(m, nn.Dropout) and not n.startswith(("fc_norm", "head")):
            n_method_dropouts += 1
    if name in options:
        assert n_method_dropouts > 0, f"{name}: its dropout is not in train mode"
    if name != "full":
        assert all(not m.training for m in model.modules() if type(m).__name__ == "DropPath")
    model.eval()
    assert not any(m.training for m in model.modules())


@pytest.mark.parametrize("name", aptune.list_methods())
def test_count_parameters_matches_trainable_names(name):
    model = aptune.create_model("tiny", num_classes=NUM_CLASSES, method=name)
    params = dict(model.named_parameters())
    counts = aptune.count_parameters(model)
    assert counts["trainable"] == sum(params[n].numel() for n in model.tuning.trainable_names)
    assert counts["total"] == sum(p.numel() for p in params.values())


@pytest.mark.parametrize("name", aptune.list_methods())
def test_adapter_round_trip(name, tmp_path):
    plain = plain_model()
    torch.save(plain.state_dict(), tmp_path / "backbone.pth")
    model = method_model(plain, name)
    params = dict(model.named_parameters())
    with torch.no_grad():   # move off the init (zero B, zero up, ...) so the round trip means something
        for n in model.tuning.trainable_names:
            params[n].add_(torch.randn_like(params[n]) * 0.05)
    aptune.save_adapter(model, tmp_path / "adapter")
    loaded = aptune.load_adapter(tmp_path / "adapter", checkpoint=tmp_path / "backbone.pth")
    assert loaded.tuning.name == name and loaded.tuning.trainable_names == model.tuning.trainable_names
    x = video()
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model.eval()(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", aptune.list_methods())
def test_bad_options_name_the_field(name):
    with pytest.raises(ValueError, match="bogus_option"):
        aptune.create_model("tiny", method=name, bogus_option=1)
    fields = {f.name for f in dataclasses.fields(get_method(name).config)}
    if "num_prompts" in fields:
        with pytest.raises(ValueError, match=rf"{name}\.num_prompts"):
            aptune.create_model("tiny", method=name, num_prompts=-1)
    if "layers" in fields:
        for bad in ([99], [0, 4], -5):
            with pytest.raises(ValueError, match=rf"{name}\.layers"):
                aptune.create_model("tiny", method=name, layers=bad)
        aptune.create_model("tiny", method=name, layers=[-1])   # counts from the end: allowed


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


@pytest.mark.parametrize("name", aptune.list_methods())
def test_bf16_autocast_forward_backward(name):
    model = method_model(plain_model(), name).train()
    x = video()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    F.cross_entropy(logits.float(), torch.tensor([1, 3])).backward()
    params = dict(model.named_parameters())
    assert all(torch.isfinite(params[n].grad).all() for n in model.tuning.trainable_names)
    with torch.no_grad():
        model.eval()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x).float()
        torch.testing.assert_close(low, model(x), rtol=0.05, atol=0.05 * model(x).abs().max().item())


@pytest.mark.parametrize("name", aptune.list_methods())
def test_runs_under_no_grad_with_module_hooks(name):
    """FLOP counting runs the model under no_grad with module hooks (torch's ModuleTracker)."""
    from torch.utils.flop_counter import FlopCounterMode
    model = aptune.create_model("tiny", num_classes=NUM_CLASSES, method=name).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(video())
    assert counter.get_total_flops() > 0


@pytest.mark.parametrize("name", aptune.list_methods())
def test_one_optimizer_step_changes_exactly_what_trains(name):
    """The engine's AdamW step over the model moves every listed parameter and nothing else."""
    from aptune.config import OptimConfig
    from aptune.engine.optim import build_optimizer
    plain = plain_model()
    model = method_model(plain, name)
    with torch.no_grad():  # leave the zero inits (LoRA B, AdaptFormer up) so every gradient is non-zero
        for n in model.tuning.trainable_names:
            model.get_parameter(n).add_(torch.randn_like(model.get_parameter(n)) * 0.01)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(model, OptimConfig(weight_decay=0.05), base_lr=1e-3)
    model.train()
    F.cross_entropy(model(torch.randn(*VIDEO)), torch.tensor([0, 1])).backward()
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == set(model.tuning.trainable_names)
