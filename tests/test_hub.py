"""Checkpoints by Hugging Face Hub id, read through a real huggingface_hub cache laid out on disk
(tests/hubcache.py) with tiny models of each repository's key layout, saved by transformers; offline
(HF_HUB_OFFLINE=1, conftest), nothing of aptune mocked. References: the transformers models themselves."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

import aptune
from aptune.errors import AptuneError, MissingFileError
from aptune.hub import parse_id, resolve

from hubcache import folder_files, put

VIDEOMAE = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256, patch_size=8,
                tubelet_size=2, num_frames=4, image_size=32)
IMAGE = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2, image_size=32,
             patch_size=8)
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]


def v4_names(state: dict) -> dict:
    """transformers 4's VideoMAE names (q_bias / v_bias), as the files on the Hub were written."""
    return {k.replace("query.bias", "q_bias").replace("value.bias", "v_bias"): v.contiguous() for k, v in state.items()}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A cache holding a tiny model of each supported repository: {id: (transformers model, commit)}."""
    from transformers import (
        CLIPConfig,
        CLIPModel,
        VideoMAEConfig,
        VideoMAEForPreTraining,
        VideoMAEForVideoClassification,
        ViTConfig,
        ViTModel,
    )

    from test_image_vit import _perturb as perturb
    from test_image_vit import to_timm
    root = tmp_path_factory.mktemp("hf")
    cache, work = root / "home" / "hub", root / "work"
    models = {}
    pre = perturb(VideoMAEForPreTraining(VideoMAEConfig(
        **VIDEOMAE, use_mean_pooling=False, decoder_hidden_size=32, decoder_num_attention_heads=2,
        decoder_intermediate_size=64, decoder_num_hidden_layers=1)))
    pre.config.save_pretrained(work / "pre")
    torch.save(v4_names(pre.state_dict()), work / "pre" / "pytorch_model.bin")   # as the Hub's files: .bin, v4
    cls = perturb(VideoMAEForVideoClassification(VideoMAEConfig(
        **VIDEOMAE, use_mean_pooling=True, id2label={0: "abseiling", 1: "archery", 2: "baking"})), seed=1)
    cls.save_pretrained(work / "cls")
    for repo, (model, folder) in {"MCG-NJU/videomae-base": (pre, "pre"), "MCG-NJU/videomae-base-ssv2": (pre, "pre"),
                                  "MCG-NJU/videomae-base-finetuned-kinetics": (cls, "cls"),
                                  "MCG-NJU/videomae-base-finetuned-ssv2": (cls, "cls")}.items():
        models[repo] = (model, put(cache, repo, folder_files(work / folder)))
    clip = perturb(CLIPModel(CLIPConfig(vision_config=IMAGE, text_config=dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2))), seed=2)
    clip.save_pretrained(work / "clip")
    (work / "clip" / "preprocessor_config.json").write_text(json.dumps({"image_mean": CLIP_MEAN,
                                                                        "image_std": [0.26, 0.26, 0.27]}))
    models["openai/clip-vit-base-patch16"] = (clip, put(cache, "openai/clip-vit-base-patch16",
                                                        folder_files(work / "clip")))
    vit = perturb(ViTModel(ViTConfig(**IMAGE, layer_norm_eps=1e-6), add_pooling_layer=True), seed=3)   # timm's eps
    vit.save_pretrained(work / "vit")
    models["google/vit-base-patch16-224-in21k"] = (vit, put(cache, "google/vit-base-patch16-224-in21k",
                                                            folder_files(work / "vit")))
    save_file(to_timm(vit.state_dict(), depth=2, num_classes=7), str(work / "timm.safetensors"))
    timm_cfg = {"architecture": "vit_base_patch16_224", "num_classes": 7, "num_features": 128,
                "pretrained_cfg": {"tag": "augreg_in21k", "mean": [0.5] * 3, "std": [0.5] * 3}}   # timm's own
    models["timm/vit_base_patch16_224.augreg_in21k"] = (vit, put(
        cache, "timm/vit_base_patch16_224.augreg_in21k",
        {"config.json": json.dumps(timm_cfg), "model.safetensors": work / "timm.safetensors"}))
    return cache, models


@pytest.fixture
def cache(hub, monkeypatch):
    """Point huggingface_hub at the laid-out cache (what HF_HOME does when set before it is imported)."""
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub[0]))
    return hub


def clip(b=2, t=4, s=32, seed=0):
    return torch.randn(b, 3, t, s, s, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("repo", ["MCG-NJU/videomae-base", "MCG-NJU/videomae-base-ssv2"])
def test_videomae_pretraining_id_reads_the_encoder_of_the_bin_file(cache, repo):
    hf, commit = cache[1][repo]
    x = clip()
    with torch.no_grad():   # the encoder's tokens before HF's final LayerNorm
        ref = hf.videomae.encoder(hf.videomae.embeddings(x.permute(0, 2, 1, 3, 4), None)).last_hidden_state
    for model in (aptune.create_model(repo, num_classes=3, method="linear"),
                  aptune.create_model("tiny", num_classes=3, method="linear", checkpoint=repo)):
        rep = model.eval().checkpoint_report
        assert rep["format"] == "hf-videomae" and model.checkpoint_path == repo
        assert {"videomae.layernorm.weight", "mask_token", "encoder_to_decoder.weight"} <= set(rep["dropped"])
        assert any(k.startswith("decoder.decoder_layers.") for k in rep["dropped"])
        assert set(rep["missing"]) == {"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"}
        with torch.no_grad():
            torch.testing.assert_close(model.forward_features(x)[0], ref, rtol=1e-5, atol=1e-5)
    assert resolve(repo).endswith(f"snapshots/{commit}")


@pytest.mark.parametrize("repo", ["MCG-NJU/videomae-base-finetuned-kinetics", "MCG-NJU/videomae-base-finetuned-ssv2"])
def test_videomae_classifier_id_gives_transformers_logits_and_class_names(cache, repo):
    hf = cache[1][repo][0]
    model = aptune.create_model(repo).eval()
    x = clip()
    with torch.no_grad():
        torch.testing.assert_close(model(x), hf(pixel_values=x.permute(0, 2, 1, 3, 4)).logits, rtol=1e-5, atol=1e-5)
    assert model.class_names == ["abseiling", "archery", "baking"]


def test_clip_id_reads_the_vision_tower_and_its_preprocessor_config(cache):
    hf = cache[1]["openai/clip-vit-base-patch16"][0]
    model = aptune.create_model("openai/clip-vit-base-patch16", num_frames=1).eval()
    assert model.checkpoint_report["format"] == "hf-clip" and list(model.config.mean) == pytest.approx(CLIP_MEAN)
    x = clip(t=1)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_head(*model.forward_features(x), pre_logits=True),
                                   hf.vision_model(pixel_values=x[:, :, 0]).pooler_output,
                                   rtol=0, atol=1e-4)


@pytest.mark.parametrize("repo", ["google/vit-base-patch16-224-in21k", "timm/vit_base_patch16_224.augreg_in21k"])
def test_supervised_vit_ids_give_transformers_features(cache, repo):
    hf = cache[1][repo][0]
    model = aptune.create_model(repo, num_frames=1).eval()
    assert model.checkpoint_report["format"] == ("hf-vit" if repo.startswith("google") else "timm-vit")
    x = clip(t=1)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_head(*model.forward_features(x), pre_logits=True),
                                   hf(pixel_values=x[:, :, 0]).last_hidden_state[:, 0],
                                   rtol=1e-5, atol=1e-5)


def test_revision_after_at_picks_that_commit(cache, tmp_path):
    repo = "MCG-NJU/videomae-base-finetuned-kinetics"
    cache_dir, (hf, main_commit) = cache[0], cache[1][repo]
    other = {k: v + 1 for k, v in hf.state_dict().items()}       # another commit: every weight moved by 1
    (tmp_path / "v2").mkdir()
    save_file({k: v.contiguous() for k, v in other.items()}, str(tmp_path / "v2" / "model.safetensors"))
    shutil.copy(resolve(repo) + "/config.json", tmp_path / "v2")
    commit = put(cache_dir, repo, folder_files(tmp_path / "v2"), refs=("v2",))
    w = "videomae.embeddings.patch_embeddings.projection.weight"
    for ref, expected in ((repo, hf.state_dict()[w]), (f"{repo}@v2", other[w]), (f"{repo}@{commit}", other[w]),
                          (f"{repo}@{main_commit}", hf.state_dict()[w])):
        model = aptune.create_model(ref)
        assert torch.equal(model.patch_embed.proj.weight, expected), ref
    with pytest.raises(MissingFileError, match=r"@nope.*not in the cache.*HF_HUB_OFFLINE=1.*--revision nope"):
        resolve(f"{repo}@nope")


def test_local_path_wins_over_an_id(cache, tmp_path, monkeypatch):
    repo = "MCG-NJU/videomae-base-finetuned-kinetics"
    local = tmp_path / repo
    shutil.copytree(resolve(repo), local)              # same layout, but the classifier changed
    from safetensors.torch import load_file
    state = load_file(str(local / "model.safetensors"))
    state["classifier.bias"] = torch.full_like(state["classifier.bias"], 7.0)
    os.remove(local / "model.safetensors")
    save_file(state, str(local / "model.safetensors"))
    monkeypatch.chdir(tmp_path)
    assert resolve(repo) == repo
    assert torch.equal(aptune.create_model(repo).head.bias, torch.full((3,), 7.0))


def test_offline_and_not_cached_is_one_line_naming_the_id_and_what_to_do(cache):
    with pytest.raises(MissingFileError) as e:
        aptune.create_model("MCG-NJU/videomae-large")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("MCG-NJU/videomae-large: not a local path")
    assert "HF_HUB_OFFLINE=1" in msg and "hf download MCG-NJU/videomae-large" in msg and str(cache[0]) in msg
    with pytest.raises(MissingFileError, match="checkpoint not found: runs/x/none.pth"):
        aptune.create_model("tiny", checkpoint="runs/x/none.pth")     # two slashes: a path, not an id


def test_parse_id():
    assert parse_id("MCG-NJU/videomae-base") == ("MCG-NJU/videomae-base", None)
    assert parse_id("timm/vit_base_patch16_224.augreg_in21k@refs/pr/3") == (
        "timm/vit_base_patch16_224.augreg_in21k", "refs/pr/3")
    for not_an_id in ("videomae-vit-b", "./a/b", "/a/b", "a/b/c", "a--b/c", "../x"):
        assert parse_id(not_an_id) is None, not_an_id
    from pathlib import Path
    assert parse_id(Path("MCG-NJU/videomae-base")) is None          # a Path is a path


def test_adapter_records_the_hub_commit_and_reloads_it_pinned(cache, tmp_path, monkeypatch):
    from huggingface_hub import constants
    repo = "MCG-NJU/videomae-base"
    model = aptune.create_model(repo, num_classes=3, method="apt", num_prompts=2)
    aptune.save_adapter(model, tmp_path / "adapter")
    rec = json.loads((tmp_path / "adapter" / "adapter.json").read_text())["backbone_weights"]
    commit = cache[1][repo][1]
    assert rec["path"] == repo and rec["hub"] == {"id": repo, "revision": "main", "commit": commit}
    # another machine: the cache elsewhere, and main has moved on to other weights since training
    moved = tmp_path / "other-cache"
    shutil.copytree(cache[0] / "models--MCG-NJU--videomae-base", moved / "models--MCG-NJU--videomae-base",
                    symlinks=True)
    snap = moved / "models--MCG-NJU--videomae-base" / "snapshots" / commit
    newer = put(moved, repo, {"config.json": (snap / "config.json").read_bytes(), "pytorch_model.bin": _shifted(
        snap / "pytorch_model.bin", tmp_path)})
    assert newer != commit
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(moved))
    rec_meta = json.loads((tmp_path / "adapter" / "adapter.json").read_text())
    rec_meta["backbone_weights"]["resolved"] = str(tmp_path / "gone")
    (tmp_path / "adapter" / "adapter.json").write_text(json.dumps(rec_meta))
    back = aptune.load_adapter(tmp_path / "adapter")             # the fingerprint would refuse main's weights
    x = clip()
    with torch.no_grad():
        torch.testing.assert_close(back.eval()(x), model.eval()(x))
    with pytest.raises(AptuneError, match="fingerprint"):
        aptune.load_adapter(tmp_path / "adapter", checkpoint=repo)


def _shifted(path, tmp_path) -> bytes:
    state = {k: v + 1 for k, v in torch.load(path, weights_only=True).items()}
    torch.save(state, tmp_path / "shifted.bin")
    return (tmp_path / "shifted.bin").read_bytes()


def test_commands_take_ids_with_hf_home(cache, tmp_path):
    """The real environment variable, in a fresh process: HF_HOME decides where the cache is."""
    home = tmp_path / "home"
    shutil.copytree(cache[0] / "models--MCG-NJU--videomae-base", home / "hub" / "models--MCG-NJU--videomae-base",
                    symlinks=True)
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    run = subprocess.run([sys.executable, "-m", "aptune", "inspect-checkpoint", "MCG-NJU/videomae-base", "--json"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    info = json.loads(run.stdout)
    assert info["format"] == "hf-videomae" and info["config"]["embed_dim"] == 64


def test_inspect_checkpoint_of_a_missing_id_or_mistyped_path_is_one_line(cache, tmp_path, monkeypatch, capsys):
    from aptune.cli import main
    assert main(["inspect-checkpoint", "MCG-NJU/videomae-large"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("aptune: error: MCG-NJU/videomae-large: not a local path")
    (tmp_path / "runs").mkdir()
    monkeypatch.chdir(tmp_path)
    assert main(["inspect-checkpoint", "runs/typo"]) == 2             # no Hub look-up: runs/ is a local folder
    assert "checkpoint not found: runs/typo (read as a local path" in capsys.readouterr().err


def test_config_validation_resolves_model_checkpoint(cache, tmp_path):
    from aptune.config import Config
    cfg = Config.from_dict({"model": {"name": "tiny", "checkpoint": "MCG-NJU/videomae-base"},
                            "data": {"num_frames": 4, "img_size": 32}}, source="x.yaml")
    cfg.validate(need_train=False)
    cfg.model.checkpoint = "MCG-NJU/nothing-here"
    with pytest.raises(AptuneError, match=r"^x.yaml: model.checkpoint: MCG-NJU/nothing-here: not a local path"):
        cfg.validate(need_train=False)
