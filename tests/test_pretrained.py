"""Adapters as artefacts in PEFT's words: save_pretrained / from_pretrained (folder or Hub id), the model
card written by training, push_to_hub (no network here: what can be checked without it)."""
from __future__ import annotations

import json
import os

import pytest
import torch
import yaml

import aptune
from aptune.engine.train import train
from aptune.errors import AptuneError, MissingFileError
from aptune.stats import bootstrap_ci

from engine_data import TensorVideos, tiny_cfg
from hubcache import folder_files, put


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


@pytest.fixture
def cache(tmp_path, monkeypatch):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def backbone_file(tmp_path):
    from safetensors.torch import save_file
    plain = aptune.create_model("tiny", num_classes=0)
    with torch.no_grad():
        for p in plain.parameters():
            p.normal_(0, 0.2)
    save_file(plain.state_dict(), str(tmp_path / "backbone.safetensors"))
    return tmp_path / "backbone.safetensors"


def test_save_pretrained_from_pretrained_round_trip_with_card(tmp_path):
    ckpt = backbone_file(tmp_path)
    model = aptune.create_model("tiny", num_classes=3, checkpoint=ckpt, method="lora", rank=2)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.3)
    model.class_names = ["run", "jump", "swim"]
    out = model.save_pretrained(tmp_path / "adapter")
    assert sorted(os.listdir(out)) == ["README.md", "adapter.json", "adapter.safetensors"]
    back = aptune.from_pretrained(tmp_path / "adapter")         # the recorded backbone file
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(back.eval()(x), model.eval()(x), rtol=0, atol=0)
    card = (out / "README.md").read_text()
    meta = json.loads((out / "adapter.json").read_text())
    assert front_matter(card)["library_name"] == "aptune" and "base_model" not in front_matter(card)
    assert meta["backbone_weights"]["fingerprint"] in card and "backbone.safetensors" in card
    assert "| rank | 2 |" in card and "| targets |" in card
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert f"Trainable parameters: {trainable:,}" in card and "run, jump, swim" in card


def test_from_pretrained_of_an_adapter_repository_on_the_hub(tmp_path, cache):
    ckpt = backbone_file(tmp_path)
    model = aptune.create_model("tiny", num_classes=3, checkpoint=ckpt, method="apt", num_prompts=2)
    model.save_pretrained(tmp_path / "adapter")
    put(cache, "someone/tiny-apt", folder_files(tmp_path / "adapter"))
    back = aptune.from_pretrained("someone/tiny-apt")
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(back.eval()(x), model.eval()(x), rtol=0, atol=0)
    assert aptune.from_pretrained("someone/tiny-apt", checkpoint=ckpt).adapter_meta["method"] == "apt"
    mt = aptune.load_adapters({"t": "someone/tiny-apt"})              # many tasks on one backbone take ids too
    with torch.no_grad():
        torch.testing.assert_close(mt.eval()(x, tasks=["t"])[0], model(x)[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(MissingFileError, match="someone/other: not a local path.*HF_HUB_OFFLINE=1"):
        aptune.from_pretrained("someone/other")


def hub_backbone(cache, tmp_path):
    """A tiny VideoMAE pre-training repository (transformers' layout) standing for MCG-NJU/videomae-base."""
    from transformers import VideoMAEConfig, VideoMAEForPreTraining
    hf = VideoMAEForPreTraining(VideoMAEConfig(
        hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256, patch_size=8,
        tubelet_size=2, num_frames=4, image_size=32, use_mean_pooling=False, decoder_hidden_size=32,
        decoder_num_attention_heads=2, decoder_intermediate_size=64, decoder_num_hidden_layers=1))
    hf.save_pretrained(tmp_path / "hf")
    return put(cache, "MCG-NJU/videomae-base", folder_files(tmp_path / "hf"))


def test_training_writes_a_card_with_backbone_data_metrics_interval_and_command(tmp_path, cache, monkeypatch):
    commit = hub_backbone(cache, tmp_path)
    monkeypatch.setattr("sys.argv", ["/usr/bin/aptune", "train", "cfg.yaml", "model.checkpoint=MCG-NJU/videomae-base"])
    cfg = tiny_cfg(tmp_path, optim={"epochs": 1}, model={"checkpoint": "MCG-NJU/videomae-base"})
    out = train(cfg, datasets={"train": TensorVideos(12), "val": TensorVideos(6, mode="val"),
                                                   "test": TensorVideos(9, mode="test", views=2)})
    folder = tmp_path / "run" / "adapter"
    card = (folder / "README.md").read_text()
    meta = json.loads((folder / "adapter.json").read_text())
    assert front_matter(card)["base_model"] == "MCG-NJU/videomae-base" and f"commit `{commit}`" in card
    assert meta["backbone_weights"]["fingerprint"] in card
    assert "aptune train cfg.yaml model.checkpoint=MCG-NJU/videomae-base" in card
    assert "| num_prompts | 4 |" in card and "training videos: 12" in card and "class_0, class_1, class_2" in card
    correct = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())["video_correct"]
    low, high = bootstrap_ci(correct)
    assert f"| {out['test']['video_top1']:.2f} [95% CI {low:.1f}, {high:.1f}] |" in card
    assert "test (multi-view, 9 videos, 18 views)" in card
    assert f"| validation (one clip per video, last epoch) | {out['val']['top1']:.2f} |" in card
    assert yaml.safe_load(card.split("```yaml\n")[1].split("```")[0])["model"]["checkpoint"] == "MCG-NJU/videomae-base"
    assert (tmp_path / "run" / "best" / "README.md").exists()


def test_push_to_hub_without_network(tmp_path):
    """No Hub here: checked are the refusal of a folder that is no adapter (before any network) and the
    one-line error when huggingface_hub's HfApi is stopped by HF_HUB_OFFLINE=1. The upload itself is
    huggingface_hub's upload_folder of adapter.json, adapter.safetensors and README.md, untested here."""
    with pytest.raises(MissingFileError, match=r"adapter.json not found"):
        aptune.push_to_hub(tmp_path, "someone/x")
    model = aptune.create_model("tiny", num_classes=2, method="linear")
    with pytest.raises(AptuneError) as e:
        model.push_to_hub("someone/tiny-linear")
    assert "someone/tiny-linear" in str(e.value) and "HF_HUB_OFFLINE=1" in str(e.value) and "\n" not in str(e.value)
