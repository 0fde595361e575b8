"""PEFT's model-level calls: disable_adapter() gives the frozen backbone's own output (with the same head),
merge_and_unload() folds LoRA into the weights; checked against a plain model holding the same weights."""
from __future__ import annotations

import pytest
import torch

from aptune.errors import ConfigError

from helpers import method_model, plain_model, video

METHODS = [("apt", dict(num_prompts=3, prompt_dropout=0.0)), ("vpt", dict(num_prompts=2, prompt_dropout=0.0)),
           ("adaptformer", dict(bottleneck=4)), ("lora", dict(rank=2)), ("approx_prompt", dict(num_prompts=4)),
           ("linear", {})]


def trained(name, options):
    """A plain tiny model and the same weights with method `name` whose own parameters are non-zero."""
    plain = plain_model()
    model = method_model(plain, name, **options)
    own = set(model.tuning.trainable_names)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in own:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return plain, model.eval()


@pytest.mark.parametrize("name,options", METHODS, ids=[m for m, _ in METHODS])
def test_disable_adapter_gives_the_plain_backbone_with_the_trained_head(name, options):
    plain, model = trained(name, options)
    x = video()
    with torch.no_grad():
        adapted = model(x)
        plain.load_state_dict({k: v for k, v in model.state_dict().items() if k in plain.state_dict()})
        reference = plain(x)                                   # the frozen backbone + the trained head
        with model.disable_adapter():
            inside = model(x)
        after = model(x)
    torch.testing.assert_close(inside, reference, rtol=0, atol=0)
    torch.testing.assert_close(after, adapted, rtol=0, atol=0)
    if name != "linear":
        assert not torch.allclose(adapted, reference, atol=1e-3)    # the method did change the output


def test_disable_adapter_refuses_full_fine_tuning():
    model = method_model(plain_model(), "full")
    with pytest.raises(ConfigError, match="trains the backbone's own weights"):
        with model.disable_adapter():
            pass


def test_merge_and_unload_lora_is_the_same_function_as_a_plain_model():
    plain, model = trained("lora", dict(rank=2, targets=["qkv", "fc1"]))
    x = video()
    with torch.no_grad():
        before = model(x)
        merged = model.merge_and_unload()
        after = merged(x)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    assert merged.tuning is None and not any(".lora." in n for n, _ in merged.named_parameters())
    assert sum(p.numel() for p in merged.parameters()) == sum(p.numel() for p in plain.parameters())
    with pytest.raises(ConfigError, match=r"only low-rank updates \(LoRA\).*method 'apt' has other parameters"):
        method_model(plain_model(), "apt", num_prompts=2).merge_and_unload()
