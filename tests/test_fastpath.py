"""The fast path of aptune's model against the plainly written reference (benchmarks/plain.py):
same outputs and prompt gradients, fused attention actually used, frozen prefix without autograd,
gradient checkpointing and bf16 autocast. Tiny configs only; no timings here (see benchmarks/)."""
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import profile

import aptune
from aptune.models.layers import Attention

_spec = importlib.util.spec_from_file_location(
    "bench_plain", Path(__file__).resolve().parents[1] / "benchmarks" / "plain.py")
plain = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(plain)


def apt_model(layers=None, m=5, **kw):
    """Tiny APT model with non-zero prompts and scales on both sides of 1 (so max(s, 1) matters)."""
    model = aptune.create_model("tiny", num_classes=7, method="apt", num_prompts=m, layers=layers,
                                prompt_dropout=0.0, **kw)
    with torch.no_grad():
        for blk in model.blocks:
            if blk.kv_prompts is not None:
                blk.kv_prompts.key.normal_(0, 1.0)
                blk.kv_prompts.value.normal_(0, 1.0)
                blk.kv_prompts.scale.uniform_(0.5, 2.0)
        # a head with real weight, so gradients reaching the prompts are not tiny
        model.head.weight.normal_(0, 0.5)
    return model


def video(b=2):
    return torch.randn(b, 3, 4, 32, 32)


def prompt_grads(model, x, target):
    """Gradients of every trainable parameter after one cross-entropy backward, by name."""
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), target).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("layers", [None, [2, 3]])
def test_matches_plain_reference_forward_and_prompt_gradients(layers):
    model = apt_model(layers).eval()
    ref = plain.plain_from_aptune(model)
    x, target = video(), torch.tensor([1, 4])
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-4, atol=1e-5)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-4, atol=1e-5)
    ours, theirs = prompt_grads(model, x, target), prompt_grads(ref, x, target)
    # plain names: blocks.{i}.prompts.{key,value,scale}; aptune: blocks.{i}.kv_prompts.{...}
    theirs = {n.replace(".prompts.", ".kv_prompts."): g for n, g in theirs.items()}
    assert set(ours) == set(theirs)
    assert any(".kv_prompts.key" in n for n in ours)
    for n in ours:
        assert ours[n].abs().max() > 0, f"{n} got no gradient"
        torch.testing.assert_close(ours[n], theirs[n], rtol=1e-4, atol=1e-6, msg=n)


def test_train_mode_with_dropout_off_matches_plain():
    model = apt_model().train()        # backbone stays in eval, prompts train (dropout 0)
    ref = plain.plain_from_aptune(model)
    x = video()
    torch.testing.assert_close(model(x), ref(x), rtol=1e-4, atol=1e-5)


def test_broadcastable_extra_kv_matches_explicit_attention():
    """The seam accepts (m, hd) and anything broadcastable to (B, H, m, hd), e.g. per-sample prompts."""
    attn = Attention(32, 4).eval()
    with torch.no_grad():
        attn.q_bias.normal_()
        attn.v_bias.normal_()
    B, N, m, hd = 3, 10, 6, 8
    x = torch.randn(B, N, 32)
    for pk, pv in [(torch.randn(m, hd), torch.randn(m, hd)),
                   (torch.randn(B, 1, m, hd), torch.randn(1, 4, m, hd))]:
        qkv = F.linear(x, attn.qkv.weight, torch.cat((attn.q_bias, torch.zeros(32), attn.v_bias)))
        q, k, v = qkv.reshape(B, N, 3, 4, hd).permute(2, 0, 3, 1, 4)           # each (B, H, N, hd)
        k = torch.cat((k, pk.expand(B, 4, m, hd)), 2)
        v = torch.cat((v, pv.expand(B, 4, m, hd)), 2)
        a = ((q * hd ** -0.5) @ k.transpose(-2, -1)).softmax(-1) @ v            # (B, H, N, hd)
        want = attn.proj(a.transpose(1, 2).reshape(B, N, 32))
        torch.testing.assert_close(attn(x, (pk, pv)), want, rtol=1e-4, atol=1e-5)


def _attention_ops(fn):
    with profile() as prof:
        fn()
    return {e.name for e in prof.events()}


@pytest.mark.parametrize("m", [0, 3])
def test_fused_attention_kernel_is_used_forward_and_backward(m):
    model = apt_model(m=m) if m else aptune.create_model("tiny", num_classes=7).eval()
    x = video(1)
    with torch.inference_mode():
        ops = _attention_ops(lambda: model(x))
    fused = {o for o in ops if "scaled_dot_product" in o and o != "aten::scaled_dot_product_attention"}
    assert fused and all("math" not in o for o in fused), sorted(fused)
    assert not {"aten::softmax", "aten::_softmax"} & ops          # no explicit softmax attention
    if m:
        ops = _attention_ops(lambda: model(x).sum().backward())
        assert any("scaled_dot_product" in o and "backward" in o for o in ops), sorted(ops)


def test_frozen_prefix_builds_no_graph_and_keeps_gradients():
    model = apt_model(layers=[2, 3]).eval()      # blocks 0, 1 and the patch embedding are frozen
    assert model.num_frozen_blocks() == 2
    x, target = video(), torch.tensor([0, 6])
    current, saved, outputs = [None], [], {}
    hooks = [blk.register_forward_pre_hook(lambda mod, inp, i=i: current.__setitem__(0, i))
             for i, blk in enumerate(model.blocks)]
    hooks += [blk.register_forward_hook(lambda mod, inp, out, i=i: outputs.__setitem__(i, out[0]))
              for i, blk in enumerate(model.blocks)]

    def pack(t):
        saved.append(current[0])
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), target).backward()
    fast = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    for i in (0, 1):
        assert outputs[i].grad_fn is None and not outputs[i].requires_grad
        assert i not in saved, f"block {i} saved tensors for backward"
    assert 2 in saved and 3 in saved
    assert outputs[3].requires_grad

    # reference: an input that requires grad forces autograd through every block
    for h in hooks:
        h.remove()
    slow = prompt_grads(model, x.clone().requires_grad_(True), target)
    assert set(slow) == set(fast)
    for n in fast:
        torch.testing.assert_close(fast[n], slow[n], rtol=1e-5, atol=1e-7, msg=n)


@pytest.mark.parametrize("layers", [None, [1, 2, 3]])
def test_grad_checkpointing_same_gradients(layers):
    model = apt_model(layers).train()
    x, target = video(), torch.tensor([2, 3])
    want = prompt_grads(model, x, target)
    model.grad_checkpointing = True
    got = prompt_grads(model, x, target)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-5, atol=1e-7, msg=n)


def test_bf16_autocast_close_to_fp32():
    model = apt_model().eval()
    x = video()
    with torch.no_grad():
        want = model.forward_head(*model.forward_features(x), pre_logits=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model.forward_head(*model.forward_features(x), pre_logits=True)
    assert got.dtype in (torch.bfloat16, torch.float32)
    assert torch.isfinite(got).all()
    err = (got.float() - want).abs().max() / want.abs().max()
    assert err < 5e-2, f"bf16 relative error {err:.3g}"
    # a training step runs under autocast too and reaches the prompts
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(model(x), torch.tensor([0, 1]))
    loss.backward()
    assert model.blocks[0].kv_prompts.key.grad is not None
    assert model.blocks[0].kv_prompts.key.grad.dtype == torch.float32
