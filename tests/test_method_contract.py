"""Every registered method on every backbone family, against the method contract (PEFT-style shared tester).

Parametrised over `aptune.list_methods()` x the tiny zoo models of every registered backbone family
(models/zoo.py), so a new method or family is covered the moment it registers; a new method must add
an identity recipe to IDENTITY, a new family registers a tiny zoo model (checked below). A method that
does not support a family's token layout must refuse it by name.
"""
from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import aptune
from aptune.methods import get_method
from aptune.models.zoo import get_config, list_families, tiny_models

from helpers import clip_for, method_model, plain_model

NUM_CLASSES = 5
BACKBONES = tiny_models()           # every family's test-size zoo models (both layouts of the image ViTs)


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
    "st_adapter": ({"pre_attn": True}, None),   # conv weight and bias, both fc biases start at zero
    "aim": ({"norm_per_frame": False}, None),  # adapters' fc2 and the temporal embedding start at zero
}

PAIRS = [pytest.param(b, m, id=f"{b}-{m}") for b, m in itertools.product(BACKBONES, aptune.list_methods())]


def test_every_family_has_a_tiny_model_and_every_layout_is_covered():
    assert {type(get_config(m)).family for m in BACKBONES} == set(list_families()) == {"videomae", "clip", "vit"}
    layouts = {aptune.create_model(m).layout for m in BACKBONES}
    assert layouts == {"joint", "frames"}


def supported(backbone: str, name: str) -> bool:
    """Whether the method supports the backbone's layout; if not, building it must fail naming both."""
    with torch.device("meta"):
        plain = aptune.create_model(backbone, num_classes=NUM_CLASSES)
    if plain.layout in get_method(name).layouts:
        return True
    with pytest.raises(ValueError, match=rf"{name}.*{plain.layout}"):
        aptune.create_model(backbone, num_classes=NUM_CLASSES, method=name)
    return False


def head_names(model) -> set[str]:
    ids = {id(p) for m in model.head_modules() for p in m.parameters()}
    return {n for n, p in model.named_parameters() if id(p) in ids}


@pytest.mark.parametrize("backbone, name", PAIRS)
def test_identity_at_zero_init(backbone, name):
    if not supported(backbone, name):
        return
    if name not in IDENTITY:
        pytest.fail(f"method {name!r} has no identity recipe: add one to IDENTITY in {__file__}")
    options, setup = IDENTITY[name]
    plain = plain_model(backbone, NUM_CLASSES)
    model = method_model(plain, name, **options)
    if setup is not None:
        setup(model)
    x = clip_for(plain)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), plain(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backbone, name", PAIRS)
def test_gradients_exactly_on_trainable(backbone, name):
    if not supported(backbone, name):
        return
    model = method_model(plain_model(backbone, NUM_CLASSES), name).train()
    loss = F.cross_entropy(model(clip_for(model)), torch.tensor([1, 3]))
    loss.backward()
    trainable = set(model.tuning.trainable_names)
    assert head_names(model) <= trainable
    for n, p in model.named_parameters():
        if n in trainable:
            assert p.requires_grad and p.grad is not None, f"{name}: {n} trains but got no gradient"
        else:
            assert not p.requires_grad and p.grad is None, f"{name}: frozen {n} got a gradient"
    spec = get_method(name)
    if not spec.caches_features and not spec.full_state:
        assert trainable - head_names(model), f"{name} adds nothing to train"


def _adapter_prefixes(model):
    return [n for n, m in model.named_modules() if getattr(m, "is_adapter", False)]


DROPOUT_OPTIONS = {"vpt": {"prompt_dropout": 0.1}, "adaptformer": {"dropout": 0.1}, "lora": {"dropout": 0.1},
                   "apt": {"prompt_dropout": 0.1}, "approx_prompt": {"dropout": 0.1}}


@pytest.mark.parametrize("backbone, name", PAIRS)
def test_frozen_backbone_stays_in_eval(backbone, name):
    if not supported(backbone, name):
        return
    options = DROPOUT_OPTIONS.get(name, {})
    model = aptune.create_model(backbone, num_classes=NUM_CLASSES, drop_path_rate=0.2, method=name, **options)
    model.train()
    prefixes = _adapter_prefixes(model)
    assert prefixes, f"{name}: no module flagged is_adapter"
    heads = {n for n, m in model.named_modules() if any(m is h for h in model.head_modules())}
    n_method_dropouts = 0
    for n, m in model.named_modules():
        inside = any(n == p or n.startswith(p + ".") or p == "" for p in prefixes)
        assert m.training == inside, f"{name}: {n or 'model'} ({type(m).__name__}) training={m.training}"
        if inside and isinstance(m, nn.Dropout) and n not in heads:
            n_method_dropouts += 1
    if options:
        assert n_method_dropouts > 0, f"{name}: its dropout is not in train mode"
    if not get_method(name).full_state:
        assert all(not m.training for m in model.modules() if type(m).__name__ == "DropPath")
    model.eval()
    assert not any(m.training for m in model.modules())


@pytest.mark.parametrize("backbone, name", PAIRS)
def test_count_parameters_matches_trainable_names(backbone, name):
    if not supported(backbone, name):
        return
    model = aptune.create_model(backbone, num_classes=NUM_CLASSES, method=name)
    params = dict(model.named_parameters())
    counts = aptune.count_parameters(model)
    assert counts["trainable"] == sum(params[n].numel() for n in model.tuning.trainable_names)
    assert counts["total"] == sum(p.numel() for p in params.values())


@pytest.mark.parametrize("backbone, name", PAIRS)
def test_adapter_round_trip(backbone, name, tmp_path):
    if not supported(backbone, name):
        return
    plain = plain_model(backbone, NUM_CLASSES)
    torch.save(plain.state_dict(), tmp_path / "backbone.pth")
    model = method_model(plain, name)
    params = dict(model.named_parameters())
    with torch.no_grad():   # move off the init (zero B, zero up, ...) so the round trip means something
        for n in model.tuning.trainable_names:
            params[n].add_(torch.randn_like(params[n]) * 0.05)
    aptune.save_adapter(model, tmp_path / "adapter")
    loaded = aptune.load_adapter(tmp_path / "adapter", checkpoint=tmp_path / "backbone.pth")
    assert loaded.tuning.name == name and loaded.tuning.trainable_names == model.tuning.trainable_names
    assert loaded.family == plain.family
    x = clip_for(plain)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model.eval()(x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("backbone, name", PAIRS)
def test_bad_options_name_the_field(backbone, name):
    with pytest.raises(ValueError, match="bogus_option"):
        aptune.create_model(backbone, method=name, bogus_option=1)
    fields = {f.name for f in dataclasses.fields(get_method(name).config)}
    if "num_prompts" in fields:      # the config checks itself: no model needed to fail
        with pytest.raises(ValueError, match=rf"{name}\.num_prompts"):
            aptune.methods.make_config(name, num_prompts=-1)
    if "layers" in fields and supported(backbone, name):
        depth = len(aptune.create_model(backbone).blocks)
        for bad in ([99], [0, depth], -depth - 1):
            with pytest.raises(ValueError, match=rf"{name}\.layers"):
                aptune.create_model(backbone, method=name, layers=bad)
        aptune.create_model(backbone, method=name, layers=[-1])   # counts from the end: allowed


@pytest.mark.parametrize("backbone, name", PAIRS)
def test_bf16_autocast_forward_backward(backbone, name):
    if not supported(backbone, name):
        return
    model = method_model(plain_model(backbone, NUM_CLASSES), name).train()
    x = clip_for(model)
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


@pytest.mark.parametrize("backbone, name", PAIRS)
def test_runs_under_no_grad_with_module_hooks(backbone, name):
    """FLOP counting runs the model under no_grad with module hooks (torch's ModuleTracker)."""
    from torch.utils.flop_counter import FlopCounterMode
    if not supported(backbone, name):
        return
    model = aptune.create_model(backbone, num_classes=NUM_CLASSES, method=name).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(clip_for(model))
    assert counter.get_total_flops() > 0


@pytest.mark.parametrize("backbone, name", PAIRS)
def test_one_optimizer_step_changes_exactly_what_trains(backbone, name):
    """The engine's AdamW step over the model moves every listed parameter and nothing else."""
    from aptune.config import OptimConfig
    from aptune.engine.optim import build_optimizer
    if not supported(backbone, name):
        return
    model = method_model(plain_model(backbone, NUM_CLASSES), name)
    with torch.no_grad():  # leave the zero inits (LoRA B, AdaptFormer up) so every gradient is non-zero
        for n in model.tuning.trainable_names:
            model.get_parameter(n).add_(torch.randn_like(model.get_parameter(n)) * 0.01)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(model, OptimConfig(weight_decay=0.05), base_lr=1e-3)
    model.train()
    F.cross_entropy(model(clip_for(model)), torch.tensor([0, 1])).backward()
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == set(model.tuning.trainable_names)


def test_no_method_name_is_tested_outside_methods():
    """What a method is (caches features, keeps a full state, its layouts, formats) is declared in its
    file; nothing in aptune/ outside methods/ compares against a method's name."""
    import re
    from pathlib import Path
    names = "|".join(aptune.list_methods())
    test = re.compile(rf"""(==|!=|\bin\b|\bnot in\b)\s*[(\[{{]?\s*["']({names})["']|["']({names})["']\s*(==|!=)""")
    root = Path(aptune.__file__).parent
    hits = [f"{p.relative_to(root)}:{i}: {line.strip()}"
            for p in root.rglob("*.py") if "methods" not in p.relative_to(root).parts
            for i, line in enumerate(p.read_text().splitlines(), 1) if test.search(line)]
    assert not hits, hits
