"""Adapter files: only what trains, reloaded exactly, refused when they do not match."""
import json

import pytest
import torch

import aptune

from helpers import randomise, video


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
        aptune.load_adapter(tmp_path, allow_random_backbone=True)
    with pytest.raises(FileNotFoundError, match="adapter.json"):
        aptune.load_adapter(tmp_path / "nowhere")


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


def test_load_adapter_refuses_a_backbone_that_differs_in_any_frozen_tensor(tmp_path):
    """The fingerprint covers every frozen tensor and none that the method trains: one number changed in any
    frozen tensor makes load_adapter refuse the file; the same weights in another format load, whatever head
    the file carries."""
    from safetensors.torch import save_file
    model = randomise(aptune.create_model("tiny", num_classes=4, method="apt", num_prompts=3), seed=5)
    frozen = {k: v.clone() for k, v in model.state_dict().items() if k not in model.tuning.trainable_names}
    torch.save(frozen, tmp_path / "backbone.pt")
    trained = aptune.create_model("tiny", num_classes=4, method="apt", num_prompts=3,
                                  checkpoint=tmp_path / "backbone.pt")
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():                                          # the method's tensors and the head: trained
        for n, p in trained.named_parameters():
            if n in trained.tuning.trainable_names:
                p.add_(torch.randn(p.shape, generator=g))
    aptune.save_adapter(trained, tmp_path / "adapter")
    same = tmp_path / "same.safetensors"
    save_file({**frozen, "head.weight": torch.ones(4, 64), "head.bias": torch.ones(4)}, str(same))
    loaded = aptune.load_adapter(tmp_path / "adapter", checkpoint=same).eval()
    x = video()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), trained.eval()(x), rtol=0, atol=0)
    for name in ("patch_embed.proj.bias", "blocks.0.attn.q_bias", "blocks.1.attn.qkv.weight", "blocks.2.norm1.weight",
                 "blocks.3.mlp.fc2.weight"):
        other = dict(frozen)
        other[name] = frozen[name].clone()
        other[name].view(-1)[-1] += 1e-3
        save_file(other, str(tmp_path / "other.safetensors"))
        with pytest.raises(ValueError, match="fingerprint"):
            aptune.load_adapter(tmp_path / "adapter", checkpoint=tmp_path / "other.safetensors")
