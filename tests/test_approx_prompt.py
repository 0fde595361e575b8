"""Approximated Prompt Tuning: the module against the formula written out plainly."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import aptune
from aptune.methods.approx_prompt import ApproxPrompt
from aptune.models.layers import TokenLayout
from aptune.models.zoo import get_config


def reference(h, a, P, Wa, Wb, s, detach_g=True):
    """a' = exp(s) * (a + (A P) * g), A = ReLU(h P'^T), P' = P + P Wa Wb, g = max_j A (per token)."""
    P2 = P + P @ Wa @ Wb                              # (m, d)
    A = torch.relu(h @ P2.T)                          # (B, N, m)
    g = A.max(dim=-1, keepdim=True).values            # (B, N, 1)
    if detach_g:
        g = g.detach()
    return torch.exp(s) * (a + (A @ P) * g)


def random_module(d=16, m=7, r=3):
    mod = ApproxPrompt(d, m, r, dropout=0.0)
    with torch.no_grad():
        for p in (mod.prompts, mod.down, mod.up):
            p.normal_(0, 0.5)
        mod.log_scale.fill_(0.3)
    return mod


def test_module_matches_formula():
    mod = random_module()
    h, a = torch.randn(2, 10, 16), torch.randn(2, 10, 16)
    out = mod(h, a)
    ref = reference(h, a, mod.prompts, mod.down, mod.up, mod.log_scale)
    torch.testing.assert_close(out, ref)
    assert not torch.allclose(out, a)


def test_g_is_per_token_and_carries_no_gradient():
    mod = random_module()
    h, a = torch.randn(2, 10, 16), torch.randn(2, 10, 16)
    mod(h, a).square().sum().backward()
    params = (mod.prompts, mod.down, mod.up, mod.log_scale)
    got = [p.grad.clone() for p in params]
    for detach_g, same in ((True, True), (False, False)):
        grads = torch.autograd.grad(reference(h, a, *params, detach_g=detach_g).square().sum(), params)
        match = all(torch.allclose(x, y, atol=1e-5) for x, y in zip(got, grads))
        assert match == same, f"gradients with g detached={detach_g}"


def test_dropout_on_prompt_activations():
    mod = ApproxPrompt(16, 50, 2, dropout=0.5)
    with torch.no_grad():
        mod.prompts.normal_(0, 0.5)
    h, a = torch.randn(2, 10, 16), torch.randn(2, 10, 16)
    mod.eval()
    torch.testing.assert_close(mod(h, a), mod(h, a))
    torch.testing.assert_close(mod(h, a), reference(h, a, mod.prompts, mod.down, mod.up, mod.log_scale))
    mod.train()
    assert not torch.allclose(mod(h, a), mod(h, a))


class AuthorsApproximatePrompt(nn.Module):
    """The authors' module (DoubtedSteam/APT `approximate_prompt`), written plainly from their formula
    and initialisation: mm = Linear(d, r, no bias) ~ N(0, 1), then Linear(r, d, no bias) = 0; prompts
    ~ N(0, 0.02); attention dropout on the ReLU activations; scale 0; called as (x, res) with x the
    projected attention output and res the attention input."""

    def __init__(self, d, r, m, attn_drop=0.0):
        super().__init__()
        self.mm = nn.Sequential(nn.Linear(d, r, bias=False), nn.Linear(r, d, bias=False))
        nn.init.normal_(self.mm[0].weight, 0, 1.0)
        nn.init.constant_(self.mm[1].weight, 0)
        self.mm_tokens = nn.Parameter(torch.randn(m, d) * 0.02)
        self.attn_drop = nn.Dropout(attn_drop)
        self.scale = nn.Parameter(torch.zeros(1))

    def forward(self, x, res):
        attn = self.attn_drop(torch.relu(res @ (self.mm_tokens + self.mm(self.mm_tokens)).t()))
        weights = attn.max(dim=-1, keepdim=True)[0].clone().detach()
        return (x + (attn @ self.mm_tokens) * weights) * self.scale.exp()


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_matches_the_authors_module(mode):
    torch.manual_seed(0)
    ref = AuthorsApproximatePrompt(16, 3, 7, attn_drop=0.25)
    with torch.no_grad():                            # off the init: every factor non-zero
        ref.mm[1].weight.normal_(0, 0.5)
        ref.mm_tokens.normal_(0, 0.5)
        ref.scale.fill_(0.3)
    ours = ApproxPrompt(16, 7, 3, dropout=0.25)
    with torch.no_grad():                            # their Linear weights are (out, in): ours are transposed
        ours.prompts.copy_(ref.mm_tokens)
        ours.down.copy_(ref.mm[0].weight.T)
        ours.up.copy_(ref.mm[1].weight.T)
        ours.log_scale.copy_(ref.scale[0])
    ref.train(mode == "train")
    ours.train(mode == "train")
    h, a = torch.randn(2, 10, 16), torch.randn(2, 10, 16)
    torch.manual_seed(5)                             # the same dropout masks in train mode
    want = ref(a, h)
    torch.manual_seed(5)
    got = ours(h, a)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)   # (P Wa) Wb vs their mm(P): float32 rounding
    assert not torch.allclose(got, a)


def test_initial_statistics_are_the_authors():
    torch.manual_seed(0)
    ad = ApproxPrompt(256, 400, 8)
    assert 0.019 < ad.prompts.std().item() < 0.021 and abs(ad.prompts.mean().item()) < 0.002   # N(0, 0.02)
    assert 0.95 < ad.down.std().item() < 1.05 and abs(ad.down.mean().item()) < 0.1               # N(0, 1)
    assert torch.count_nonzero(ad.up) == 0 and ad.log_scale.item() == 0.0
    assert ad.dropout.p == 0.0
    P = ad.prompts
    torch.testing.assert_close(P + P @ ad.down @ ad.up, P)                                        # P' = P


def test_defaults_and_parameter_count():
    model = aptune.create_model("tiny", num_classes=5, method="approx_prompt")   # defaults m=200, r=4
    ad = model.blocks[0].attn_adapter
    assert ad.prompts.shape == (200, 64) and ad.down.shape == (64, 4) and ad.up.shape == (4, 64)
    assert ad.dropout.p == 0.0
    per_block = 200 * 64 + 2 * 4 * 64 + 1
    assert sum(p.numel() for p in ad.parameters()) == per_block
    assert aptune.count_parameters(model)["trainable"] == 4 * per_block + 64 * 5 + 5 + 2 * 64


def _tiny(**overrides):
    return get_config("tiny", num_classes=5, **overrides)


@pytest.mark.parametrize("overrides, frames", [({}, 4), ({"tubelet_size": 1, "num_frames": 1}, 1)])
def test_zero_prompts_equal_base_and_gradients(overrides, frames):
    cfg = _tiny(**overrides)
    plain = aptune.create_model(cfg).eval()
    model = aptune.create_model(cfg, method="approx_prompt", num_prompts=6, rank=2, layers=[1, 3])
    model.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(2, 3, frames, 32, 32)
    with torch.no_grad():
        for i in (1, 3):
            model.blocks[i].attn_adapter.prompts.zero_()
        torch.testing.assert_close(model.eval()(x), plain(x))          # P = 0: the plain model
        for i in (1, 3):
            model.blocks[i].attn_adapter.prompts.normal_(0, 0.5)
            model.blocks[i].attn_adapter.log_scale.fill_(0.2)
        assert not torch.allclose(model(x), plain(x))

    model.train()
    F.cross_entropy(model(x), torch.tensor([0, 4])).backward()
    for i in (1, 3):   # at the authors' init Wb = 0, so Wa's gradient is zero and Wb's is not (as LoRA's A, B)
        ad = model.blocks[i].attn_adapter
        assert ad.down.grad.abs().sum() == 0 and ad.up.grad.abs().sum() > 0
    model.zero_grad()
    with torch.no_grad():
        for i in (1, 3):
            model.blocks[i].attn_adapter.up.normal_(0, 0.5)
    F.cross_entropy(model(x), torch.tensor([0, 4])).backward()
    for i in (1, 3):
        ad = model.blocks[i].attn_adapter
        for n, p in ad.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"block {i} {n} got no gradient"
    trainable = set(model.tuning.trainable_names)
    for n, p in model.named_parameters():
        assert (p.grad is not None) == (n in trainable), n
    assert model.blocks[0].attn_adapter is None and model.blocks[2].attn_adapter is None


def test_block_output_uses_attention_input_and_output():
    """Inside a block the seam receives h = LN1(x) and the attention output a."""
    model = aptune.create_model("tiny", num_classes=5, method="approx_prompt", num_prompts=5, rank=2).eval()
    blk, ad = model.blocks[2], model.blocks[2].attn_adapter
    with torch.no_grad():
        ad.prompts.normal_(0, 0.5)
        ad.log_scale.fill_(-0.4)
        x = torch.randn(2, 32, 64)
        layout = TokenLayout(frames=4, grid=(2, 4, 4))
        h = blk.norm1(x)
        x1 = x + reference(h, blk.attn(h), ad.prompts, ad.down, ad.up, ad.log_scale)
        torch.testing.assert_close(blk(x, layout)[0], x1 + blk.mlp(blk.norm2(x1)))


def test_no_prompts_and_bad_options():
    mod = ApproxPrompt(16, 0, 2, dropout=0.0)
    with torch.no_grad():
        mod.log_scale.fill_(0.5)
    a = torch.randn(2, 3, 16)
    torch.testing.assert_close(mod(torch.randn(2, 3, 16), a), torch.exp(torch.tensor(0.5)) * a)
    with pytest.raises(ValueError, match=r"approx_prompt\.rank"):
        aptune.create_model("tiny", method="approx_prompt", rank=-1)
    with pytest.raises(ValueError, match=r"approx_prompt\.dropout"):
        aptune.create_model("tiny", method="approx_prompt", dropout=1.0)
