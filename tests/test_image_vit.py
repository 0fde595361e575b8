"""Image ViT backbones on video (CLIP vision tower, supervised ViT) and their checkpoint formats, checked
against transformers' CLIPVisionModel / ViTModel (random weights, saved as folders) and against state
dicts written here in the OpenAI / open_clip / timm key layouts from those same weights."""
from __future__ import annotations

import json
import pickle
import zipfile

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    ViTConfig,
    ViTForImageClassification,
    ViTModel,
)

import aptune
from aptune.errors import CheckpointError, ConfigError
from aptune.models.checkpoints import UnsafeCheckpointError, describe_checkpoint
from aptune.models.image_vit import CLIP_MEAN, CLIP_STD
from aptune.models.torchscript import read_torchscript

# head_dim 64, so OpenAI's rule (heads = width / 64) holds for the files without a config
SIZES = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2, image_size=32,
             patch_size=8)
SAME = dict(embed_dim=128, depth=2, num_heads=2, mlp_ratio=2.0, patch_size=8, img_size=32)   # as aptune configs


def _perturb(model, seed=0):
    """Non-trivial weights everywhere (LayerNorms, biases, class token), so a misplaced tensor shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def hf_clip(tmp_path_factory):
    model = _perturb(CLIPVisionModel(CLIPVisionConfig(**SIZES)))
    folder = tmp_path_factory.mktemp("hf") / "clip"
    model.save_pretrained(folder)
    return model, folder


@pytest.fixture(scope="module")
def hf_vit(tmp_path_factory):
    model = _perturb(ViTModel(ViTConfig(**SIZES), add_pooling_layer=True), seed=1)
    folder = tmp_path_factory.mktemp("hf") / "vit"
    model.save_pretrained(folder)
    return model, folder


def images(b=2, s=32, seed=3):
    return torch.randn(b, 3, s, s, generator=torch.Generator().manual_seed(seed))


def clip_features(hf, x):
    """CLIP's pooled, pre-projection output: post_layernorm of the class token."""
    with torch.no_grad():
        return hf(pixel_values=x).pooler_output


def vit_features(hf, x):
    """The supervised ViT's features: the class token after the final layernorm (not the tanh pooler)."""
    with torch.no_grad():
        return hf(pixel_values=x).last_hidden_state[:, 0]


def features(model, video):
    with torch.no_grad():
        return model.eval().forward_head(*model.forward_features(video), pre_logits=True)


# ---- Hugging Face folders --------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["frames", "joint"])
def test_hf_clip_folder_one_frame_and_copies(hf_clip, layout):
    hf, folder = hf_clip
    x = images()
    one = aptune.create_model(str(folder), num_frames=1, layout=layout)
    assert one.family == "clip" and one.layout == layout and one.checkpoint_report["format"] == "hf-clip"
    torch.testing.assert_close(features(one, x[:, :, None]), clip_features(hf, x), rtol=0, atol=1e-4)
    four = aptune.create_model(str(folder), num_frames=4, layout=layout)
    torch.testing.assert_close(features(four, x[:, :, None].repeat(1, 1, 4, 1, 1)), clip_features(hf, x),
                               rtol=0, atol=1e-4)


def test_hf_clip_frames_layout_averages_class_tokens_then_ln_post(hf_clip):
    hf, folder = hf_clip
    frames = [images(seed=s) for s in range(3)]
    with torch.no_grad():
        cls = torch.stack([hf(pixel_values=f).last_hidden_state[:, 0] for f in frames]).mean(0)
        ref = hf.vision_model.post_layernorm(cls) if hasattr(hf, "vision_model") else hf.post_layernorm(cls)
    model = aptune.create_model(str(folder), num_frames=3)
    torch.testing.assert_close(features(model, torch.stack(frames, dim=2)), ref, rtol=0, atol=1e-4)


def test_hf_clip_model_folder_ignores_the_text_tower(tmp_path):
    cfg = CLIPConfig(vision_config=SIZES, text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                           num_attention_heads=2))
    hf = _perturb(CLIPModel(cfg))
    hf.save_pretrained(tmp_path / "clipmodel")
    model = aptune.create_model(str(tmp_path / "clipmodel"), num_frames=1)
    report = model.checkpoint_report
    assert report["format"] == "hf-clip" and any(k.startswith("text_model.") for k in report["dropped"])
    assert "visual_projection.weight" in report["dropped"]
    with torch.no_grad():
        ref = hf.vision_model(pixel_values=images()).pooler_output
    torch.testing.assert_close(features(model, images()[:, :, None]), ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize("layout", ["frames", "joint"])
def test_hf_vit_folder_one_frame_and_copies(hf_vit, layout):
    hf, folder = hf_vit
    x = images()
    one = aptune.create_model(str(folder), num_frames=1, layout=layout)
    assert one.family == "vit" and one.checkpoint_report["format"] == "hf-vit"
    assert one.config.norm_eps == 1e-12 and one.config.mean == (0.5, 0.5, 0.5)   # config.json, HF's default
    torch.testing.assert_close(features(one, x[:, :, None]), vit_features(hf, x), rtol=0, atol=1e-4)
    four = aptune.create_model(str(folder), num_frames=4, layout=layout)
    torch.testing.assert_close(features(four, x[:, :, None].repeat(1, 1, 4, 1, 1)), vit_features(hf, x),
                               rtol=0, atol=1e-4)


def test_hf_vit_classifier_folder_keeps_its_head_and_class_names(tmp_path):
    names = ["cat", "dog", "eel"]
    hf = _perturb(ViTForImageClassification(ViTConfig(**SIZES, num_labels=3, id2label=dict(enumerate(names)),
                                                      label2id={n: i for i, n in enumerate(names)})))
    hf.save_pretrained(tmp_path / "vitc")
    (tmp_path / "vitc" / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.1, 0.2, 0.3],
                                                                           "image_std": [0.4, 0.5, 0.6]}))
    model = aptune.create_model(str(tmp_path / "vitc"), num_frames=1).eval()
    assert model.num_classes == 3 and model.class_names == names
    assert model.config.mean == (0.1, 0.2, 0.3) and model.config.std == (0.4, 0.5, 0.6)
    with torch.no_grad():
        torch.testing.assert_close(model(images()[:, :, None]), hf(pixel_values=images()).logits, rtol=0, atol=1e-4)


def test_hf_state_dicts_saved_as_files(hf_clip, hf_vit, tmp_path):
    """model.state_dict() of a transformers model (transformers 5's in-memory names), without config.json."""
    for (hf, _), ref in ((hf_clip, clip_features), (hf_vit, vit_features)):
        torch.save(hf.state_dict(), tmp_path / "sd.pth")
        model = aptune.create_model(str(tmp_path / "sd.pth"), num_frames=1)
        assert model.config.num_heads == 2 and model.config.norm_eps == (1e-5 if model.family == "clip" else 1e-12)
        torch.testing.assert_close(features(model, images()[:, :, None]), ref(hf, images()), rtol=0, atol=1e-4)


def test_hf_vit_folder_is_not_mistaken_for_videomae(hf_vit):
    _, folder = hf_vit
    assert describe_checkpoint(folder)["format"] == "hf-vit"


def test_hf_eps_is_set_when_loading_into_a_zoo_model(hf_vit):
    _, folder = hf_vit
    cfg = aptune.get_config("vit-b16", **SAME, num_frames=1)
    model = aptune.create_model(cfg, checkpoint=str(folder))
    assert model.config.norm_eps == 1e-12 and model.blocks[0].norm1.eps == 1e-12 and model.ln_post.eps == 1e-12
    assert any("eps set from config.json" in n for n in model.checkpoint_report["notes"])
    bad = aptune.get_config("vit-b16", **{**SAME, "num_heads": 4})
    with pytest.raises(CheckpointError, match="num_heads is 4 in the model but 2"):
        aptune.create_model(bad, checkpoint=str(folder))


def test_position_table_interpolated_as_transformers_does(hf_clip):
    hf, folder = hf_clip
    x = images(s=48)
    model = aptune.create_model(str(folder), num_frames=1, img_size=48)
    assert any("bicubic" in n for n in model.checkpoint_report["notes"])
    with torch.no_grad():
        ref = hf(pixel_values=x, interpolate_pos_encoding=True).pooler_output
    torch.testing.assert_close(features(model, x[:, :, None]), ref, rtol=0, atol=1e-4)


# ---- OpenAI / open_clip / TorchScript layouts ------------------------------------------------
def to_openai(hf_state: dict, depth: int, prefix: str = "visual.", text: bool = True) -> dict:
    """The same CLIP vision weights under OpenAI's names (as `clip/model.py` builds them), with a text tower."""
    g = {k.removeprefix("vision_model."): v.clone() for k, v in hf_state.items()}
    out = {"conv1.weight": g["embeddings.patch_embedding.weight"], "class_embedding": g["embeddings.class_embedding"],
           "positional_embedding": g["embeddings.position_embedding.weight"],
           "ln_pre.weight": g["pre_layrnorm.weight"], "ln_pre.bias": g["pre_layrnorm.bias"],
           "ln_post.weight": g["post_layernorm.weight"], "ln_post.bias": g["post_layernorm.bias"],
           "proj": torch.randn(g["post_layernorm.weight"].shape[0], 16)}
    for i in range(depth):
        a, b = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[b + f"attn.in_proj_{kind}"] = torch.cat([g[a + f"self_attn.{p}_proj.{kind}"] for p in "qkv"])
            out[b + f"attn.out_proj.{kind}"] = g[a + f"self_attn.out_proj.{kind}"]
            out[b + f"ln_1.{kind}"] = g[a + f"layer_norm1.{kind}"]
            out[b + f"ln_2.{kind}"] = g[a + f"layer_norm2.{kind}"]
            out[b + f"mlp.c_fc.{kind}"] = g[a + f"mlp.fc1.{kind}"]
            out[b + f"mlp.c_proj.{kind}"] = g[a + f"mlp.fc2.{kind}"]
    out = {prefix + k: v for k, v in out.items()}
    if text:   # OpenAI's text tower uses the same block names without the prefix: none of it may be read
        out.update({"positional_embedding": torch.randn(7, 32), "token_embedding.weight": torch.randn(50, 32),
                    "transformer.resblocks.0.attn.in_proj_weight": torch.randn(96, 32),
                    "ln_final.weight": torch.ones(32), "ln_final.bias": torch.zeros(32),
                    "text_projection": torch.randn(32, 16), "logit_scale": torch.tensor(4.6)})
    return out


def test_openai_state_dict_builds_the_architecture_it_implies(hf_clip, tmp_path):
    hf, _ = hf_clip
    torch.save(to_openai(hf.state_dict(), depth=2), tmp_path / "ViT-tiny.pt")
    model = aptune.create_model(str(tmp_path / "ViT-tiny.pt"), num_frames=1)
    c = model.config
    assert (model.family, c.embed_dim, c.depth, c.num_heads, c.patch_size, c.img_size) == ("clip", 128, 2, 2, 8, 32)
    assert (c.act, c.norm_eps, c.mean, c.std, c.ln_pre, c.patch_bias) == ("quick_gelu", 1e-5, CLIP_MEAN, CLIP_STD,
                                                                         True, False)
    report = model.checkpoint_report
    assert report["format"] == "openai-clip"
    assert {"visual.proj", "token_embedding.weight", "transformer.resblocks.0.attn.in_proj_weight"} <= \
        set(report["dropped"])
    torch.testing.assert_close(features(model, images()[:, :, None]), clip_features(hf, images()), rtol=0, atol=1e-4)


def test_open_clip_training_checkpoint_and_visual_only_state(hf_clip, tmp_path):
    hf, _ = hf_clip
    state = {"module." + k: v for k, v in to_openai(hf.state_dict(), depth=2).items()}
    torch.save({"epoch": 3, "name": "run", "state_dict": state}, tmp_path / "epoch_3.pt")
    visual_only = to_openai(hf.state_dict(), depth=2, prefix="", text=False)   # model.visual.state_dict()
    torch.save(visual_only, tmp_path / "visual.pth")
    ref = clip_features(hf, images())
    for name in ("epoch_3.pt", "visual.pth"):
        model = aptune.create_model(str(tmp_path / name), num_frames=1)
        assert model.checkpoint_report["format"] == "openai-clip"
        torch.testing.assert_close(features(model, images()[:, :, None]), ref, rtol=0, atol=1e-4)


class _Holder(nn.Module):
    """A module tree carrying a flat state dict under its names (what an archive stores), for torch.jit.trace."""

    def forward(self, x):
        return x * 2


def module_tree(state: dict) -> nn.Module:
    root = _Holder()
    for key, v in state.items():
        *path, leaf = key.split(".")
        m = root
        for p in path:
            if p not in m._modules:
                m.add_module(p, nn.Module())
            m = m._modules[p]
        m.register_parameter(leaf, nn.Parameter(v.clone(), requires_grad=False))
    return root


def test_torchscript_archive_read_without_running_it(hf_clip, tmp_path):
    hf, _ = hf_clip
    state = {k: v.half() for k, v in to_openai(hf.state_dict(), depth=2).items()}   # OpenAI's archives are fp16
    archive = tmp_path / "ViT-tiny-jit.pt"
    torch.jit.save(torch.jit.trace(module_tree(state), torch.zeros(1)), str(archive))
    read = read_torchscript(archive)
    assert set(read) == set(state)
    assert all(torch.equal(read[k], state[k]) and read[k].dtype == torch.float16 for k in state)
    torch.save(state, tmp_path / "plain.pt")
    assert read_torchscript(tmp_path / "plain.pt") is None                       # a torch.save zip, not TorchScript
    from_archive = aptune.create_model(str(archive), num_frames=1)
    assert from_archive.checkpoint_report["format"] == "openai-clip"
    from_file = aptune.create_model(str(tmp_path / "plain.pt"), num_frames=1)
    x = images()[:, :, None]
    torch.testing.assert_close(features(from_archive, x), features(from_file, x), rtol=0, atol=0)
    torch.testing.assert_close(features(from_archive, x), clip_features(hf, images()), rtol=0, atol=2e-2)
    cfg = aptune.get_config("clip-vit-b16", **SAME)
    as_checkpoint = aptune.create_model(cfg, num_frames=1, checkpoint=str(archive))  # checkpoint= path too
    torch.testing.assert_close(features(as_checkpoint, x), features(from_file, x), rtol=0, atol=0)


class _Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        import os
        return os.mkdir, (self.path,)


def test_torchscript_archive_with_foreign_globals_is_refused(tmp_path):
    archive = tmp_path / "evil.pt"
    marker = tmp_path / "was_run"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("evil/data.pkl", pickle.dumps({"x": _Payload(str(marker))}, protocol=2))
        zf.writestr("evil/constants.pkl", pickle.dumps(()))
    with pytest.raises(UnsafeCheckpointError, match="os.mkdir|posix.mkdir"):
        read_torchscript(archive)
    with pytest.raises(UnsafeCheckpointError):
        aptune.create_model(str(archive))
    assert not marker.exists()


# ---- timm --------------------------------------------------------------------------------------
def to_timm(hf_state: dict, depth: int, num_classes: int = 0) -> dict:
    """The same supervised ViT weights under timm's names."""
    g = {k.removeprefix("vit."): v.clone() for k, v in hf_state.items()}
    out = {"cls_token": g["embeddings.cls_token"], "pos_embed": g["embeddings.position_embeddings"],
           "patch_embed.proj.weight": g["embeddings.patch_embeddings.projection.weight"],
           "patch_embed.proj.bias": g["embeddings.patch_embeddings.projection.bias"],
           "norm.weight": g["layernorm.weight"], "norm.bias": g["layernorm.bias"]}
    for i in range(depth):
        a, b = f"encoder.layer.{i}.", f"blocks.{i}."
        if a + "attention.attention.query.weight" not in g:          # transformers 5's in-memory names
            a = f"layers.{i}."
            q, k, v, o, fc1, fc2 = ("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj",
                                    "mlp.fc1", "mlp.fc2")
        else:
            q, k, v, o, fc1, fc2 = ("attention.attention.query", "attention.attention.key", "attention.attention.value",
                                    "attention.output.dense", "intermediate.dense", "output.dense")
        for kind in ("weight", "bias"):
            out[b + f"attn.qkv.{kind}"] = torch.cat([g[a + f"{n}.{kind}"] for n in (q, k, v)])
            out[b + f"attn.proj.{kind}"] = g[a + f"{o}.{kind}"]
            out[b + f"norm1.{kind}"] = g[a + f"layernorm_before.{kind}"]
            out[b + f"norm2.{kind}"] = g[a + f"layernorm_after.{kind}"]
            out[b + f"mlp.fc1.{kind}"] = g[a + f"{fc1}.{kind}"]
            out[b + f"mlp.fc2.{kind}"] = g[a + f"{fc2}.{kind}"]
    if num_classes:
        out["head.weight"] = torch.randn(num_classes, g["layernorm.weight"].shape[0])
        out["head.bias"] = torch.randn(num_classes)
    return out


def test_timm_state_dict_builds_the_architecture_it_implies(hf_vit, tmp_path):
    hf, _ = hf_vit
    torch.save(to_timm(hf.state_dict(), depth=2, num_classes=10), tmp_path / "vit_tiny.pth")
    model = aptune.create_model(str(tmp_path / "vit_tiny.pth"), num_frames=1)
    c = model.config
    assert model.checkpoint_report["format"] == "timm-vit" and model.family == "vit"
    assert (c.embed_dim, c.depth, c.num_heads, c.patch_size, c.img_size, c.num_classes) == (128, 2, 2, 8, 32, 10)
    assert (c.act, c.ln_pre, c.patch_bias, c.qkv_bias) == ("gelu", False, True, True)
    model.set_norm_eps(1e-12)     # timm's eps is 1e-6; transformers' default 1e-12, which the reference uses
    torch.testing.assert_close(features(model, images()[:, :, None]), vit_features(hf, images()), rtol=0, atol=1e-4)


def test_a_clip_file_does_not_load_into_a_vit(hf_clip, tmp_path):
    hf, _ = hf_clip
    torch.save(to_openai(hf.state_dict(), depth=2), tmp_path / "clip.pt")
    cfg = aptune.get_config("vit-b16", **SAME)
    with pytest.raises(CheckpointError, match="a clip checkpoint .*cannot load into a vit backbone"):
        aptune.create_model(cfg, checkpoint=str(tmp_path / "clip.pt"))


def test_timm_avg_pool_vit_is_refused_naming_the_keys(hf_vit, tmp_path):
    hf, _ = hf_vit
    state = to_timm(hf.state_dict(), depth=2)
    state["fc_norm.weight"], state["fc_norm.bias"] = torch.ones(128), torch.zeros(128)
    torch.save(state, tmp_path / "avg.pth")
    with pytest.raises(CheckpointError, match="fc_norm"):
        aptune.create_model(str(tmp_path / "avg.pth"))


def test_own_state_dict_round_trip_with_joint_temporal_embedding(tmp_path):
    model = aptune.create_model("tiny-clip-joint", num_classes=3)
    with torch.no_grad():
        model.temporal_embed.weight.normal_()
    torch.save(model.state_dict(), tmp_path / "own.pth")
    again = aptune.create_model("tiny-clip-joint", num_classes=3, checkpoint=str(tmp_path / "own.pth"))
    assert again.checkpoint_report["format"] == "aptune-image-vit"
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), model.eval()(x), rtol=0, atol=0)
    eight = aptune.create_model("tiny-clip-joint", num_classes=3, num_frames=8, checkpoint=str(tmp_path / "own.pth"))
    ref = F.interpolate(model.temporal_embed.weight.detach().transpose(1, 2), size=8, mode="linear",
                        align_corners=False).transpose(1, 2)
    torch.testing.assert_close(eight.temporal_embed.weight.detach(), ref)
    frames = aptune.create_model("tiny-clip", num_classes=3, checkpoint=str(tmp_path / "own.pth"))
    assert "temporal_embed.weight" in frames.checkpoint_report["skipped"]


# ---- layouts, normalisation, the zoo -----------------------------------------------------------
def test_layouts_default_and_refusals():
    assert aptune.create_model("tiny-clip").layout == "frames"
    assert aptune.create_model("tiny-vit", layout="joint").layout == "joint"
    with pytest.raises(ConfigError, match="layout 'frames'.*videomae.*'joint'"):
        aptune.create_model("tiny", layout="frames")
    with pytest.raises(ConfigError, match="layout 'spatial'"):
        aptune.create_model("tiny-clip", layout="spatial")


def test_tokens_and_cost_of_the_two_layouts():
    from aptune import count_flops
    x = torch.randn(1, 3, 4, 32, 32)
    for layout, shape in (("frames", (4, 17, 64)), ("joint", (1, 4 + 4 * 16, 64))):
        model = aptune.create_model("tiny-clip", layout=layout)
        tokens, tl = model.forward_features(x)
        assert tuple(tokens.shape) == shape and tl.prefix == (1 if layout == "frames" else 4)
    # the same 68 tokens; only attention differs: per block Q K^T + A V = 2 * N_q * N_k * (heads * head_dim = 64)
    # for 4 sequences of 17 tokens, or one of 68; 4 blocks
    frames, joint = (count_flops(aptune.create_model("tiny-clip", layout=lt).eval(), 4, 32) for lt in ("frames",
                                                                                                       "joint"))
    assert joint - frames == pytest.approx(4 * 2 * 64 * (68 ** 2 - 4 * 17 ** 2) / 1e9, rel=1e-9)


def test_backbone_normalisation_is_recorded_and_used_by_the_data_pipeline(tmp_path):
    from aptune.config import Config
    from aptune.engine.build import build_dataset
    assert aptune.get_config("clip-vit-b16").mean == (0.48145466, 0.4578275, 0.40821073)
    assert aptune.get_config("clip-vit-b16").std == (0.26862954, 0.26130258, 0.27577711)
    assert aptune.get_config("vit-b16").mean == (0.5, 0.5, 0.5)
    (tmp_path / "train.csv").write_text("a.mp4 0\n")
    cfg = Config.from_dict({"model": {"name": "tiny-clip"}, "method": {"name": "linear"},
                            "data": {"train_list": str(tmp_path / "train.csv"), "num_frames": 4, "img_size": 32}})
    assert build_dataset(cfg, "train").mean == CLIP_MEAN and build_dataset(cfg, "train").std == CLIP_STD


def test_zoo_sizes_match_the_image_models():
    """Published sizes of the image models, less what aptune does not build (no head: num_classes=0)."""
    counts = {}
    for name in ("clip-vit-b16", "clip-vit-l14", "vit-b16"):
        with torch.device("meta"):
            counts[name] = aptune.count_parameters(aptune.create_model(name))["total"]
    # CLIP ViT-B/16 visual: 86,192,640 parameters with its 768 x 512 projection, which aptune does not use
    assert counts["clip-vit-b16"] == 86_192_640 - 768 * 512
    # ViT-L/14: 303,966,208 with its 1024 x 768 projection
    assert counts["clip-vit-l14"] == 303_966_208 - 1024 * 768
    # timm vit_base_patch16_224 without its 1000-class head: 86,567,656 - (768 * 1000 + 1000)
    assert counts["vit-b16"] == 86_567_656 - 769_000


def test_one_frame_of_an_eight_frame_model_in_frames_layout():
    model = aptune.create_model("tiny-clip", num_frames=8).eval()
    x = torch.randn(2, 3, 1, 32, 32)
    single = aptune.create_model("tiny-clip", num_frames=1).eval()
    single.load_state_dict(model.state_dict())
    torch.testing.assert_close(features(model, x), features(single, x), rtol=0, atol=0)
    joint = aptune.create_model("tiny-clip-joint", num_frames=8).eval()
    with pytest.raises(ValueError, match="num_frames=1"):
        features(joint, x)


def test_cached_features_are_refused_when_something_before_pooling_trains(tmp_path):
    """The joint layout's temporal embedding trains with every method, linear probing included: training
    the head on cached pooled features would leave it at zero without a word."""
    from aptune.engine.train import train

    from engine_data import TensorVideos, tiny_cfg
    cfg = tiny_cfg(tmp_path, method="linear", runtime={"cache_features": True}, model={"name": "tiny-clip-joint"})
    data = {"train": TensorVideos(8, frames=4), "val": None, "test": None}
    with pytest.raises(ValueError, match=r"cache_features.*temporal_embed.*joint"):
        train(cfg, datasets=data)
    cfg = tiny_cfg(tmp_path / "b", method="linear", runtime={"cache_features": True}, model={"name": "tiny-clip"})
    assert train(cfg, datasets=data)["global_step"] > 0            # frames layout: nothing before pooling trains
