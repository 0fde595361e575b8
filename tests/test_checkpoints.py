"""Checkpoint interop: every format a user has, against independent references.

Foreign files are written here with the foreign key names from a random model's tensors (or by
transformers itself), then loaded through `create_model(..., checkpoint=...)` and compared.
"""
import argparse
import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import aptune
from aptune.models.checkpoints import UnsafeCheckpointError, load_checkpoint, read_checkpoint

TINY = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256, patch_size=8,
            tubelet_size=2, num_frames=4, image_size=32)


def randomise(module, std=0.1):
    """Perturb every parameter, so that any misplaced tensor (a bias, a norm) changes the output."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return module


def clip(b=2, t=4, s=32):
    return torch.randn(b, 3, t, s, s)


def backbone_model(num_classes=5, **kw):
    return randomise(aptune.create_model("tiny", num_classes=num_classes, **kw)).eval()


# ---- an independent plain implementation of the authors' APT forward, on the file's tensors ----
def sincos_table(n, d):
    """VideoMAE's fixed table: angle = pos / 10000^(2*(j//2)/d); sin on even, cos on odd channels."""
    pos = np.arange(n)[:, None]
    j = np.arange(d)[None, :]
    angle = pos / np.power(10000, 2 * (j // 2) / d)
    angle[:, 0::2] = np.sin(angle[:, 0::2])
    angle[:, 1::2] = np.cos(angle[:, 1::2])
    return torch.tensor(angle, dtype=torch.float32)[None]


def authors_apt_logits(sd, args, x, num_heads, eps=1e-6):
    w = sd["patch_embed.proj.weight"]                                    # (C, 3, t, p, p)
    tok = F.conv3d(x, w, sd["patch_embed.proj.bias"], stride=tuple(w.shape[2:])).flatten(2).transpose(1, 2)
    B, N, C = tok.shape
    hd = C // num_heads
    tok = tok + sincos_table(N, C)
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    for i in range(depth):
        b = f"blocks.{i}."
        h = F.layer_norm(tok, (C,), sd[b + "norm1.weight"], sd[b + "norm1.bias"], eps)
        qkv = h @ sd[b + "attn.qkv.weight"].T + torch.cat([sd[b + "attn.q_bias"], torch.zeros(C),
                                                            sd[b + "attn.v_bias"]])
        q, k, v = qkv.reshape(B, N, 3, num_heads, hd).permute(2, 0, 3, 1, 4)
        j = i - args.prompt_start
        if 0 <= j <= args.prompt_end - args.prompt_start:
            s = torch.clamp(sd["prompt_scale"][j], min=1.0)                  # (2, m)
            pk = sd["prompt_embeddings_k"][j] * s[0][:, None]                # (m, hd)
            pv = sd["prompt_embeddings_v"][j] * s[1][:, None]
            k = torch.cat([k, pk.expand(B, num_heads, -1, -1)], dim=2)      # prompts after the keys
            v = torch.cat([v, pv.expand(B, num_heads, -1, -1)], dim=2)
        attn = torch.softmax((q * hd ** -0.5) @ k.transpose(-2, -1), dim=-1)
        o = (attn @ v).transpose(1, 2).reshape(B, N, C)
        tok = tok + o @ sd[b + "attn.proj.weight"].T + sd[b + "attn.proj.bias"]
        h = F.layer_norm(tok, (C,), sd[b + "norm2.weight"], sd[b + "norm2.bias"], eps)
        h = F.gelu(h @ sd[b + "mlp.fc1.weight"].T + sd[b + "mlp.fc1.bias"])
        tok = tok + h @ sd[b + "mlp.fc2.weight"].T + sd[b + "mlp.fc2.bias"]
    f = F.layer_norm(tok.mean(1), (C,), sd["head_norm.weight"], sd["head_norm.bias"], eps)
    return f @ sd["head.weight"].T + sd["head.bias"]


def write_apt_checkpoint(path, start=1, end=2, m=3, num_classes=5):
    src = backbone_model(num_classes)
    sd = {k: v.clone() for k, v in src.state_dict().items()}
    sd["head_norm.weight"], sd["head_norm.bias"] = sd.pop("fc_norm.weight"), sd.pop("fc_norm.bias")
    g = torch.Generator().manual_seed(7)
    n = end - start + 1
    sd["prompt_embeddings_k"] = torch.randn(n, m, 16, generator=g)
    sd["prompt_embeddings_v"] = torch.randn(n, m, 16, generator=g)
    sd["prompt_scale"] = 0.5 + torch.rand(n, 2, m, generator=g)          # both sides of 1
    args = argparse.Namespace(prompt_start=start, prompt_end=end, prompt_num_tokens=m, prompt_reparam=True,
                              lr=0.05, model="vit_base_patch16_224")
    torch.save({"model": sd, "args": args, "epoch": 9}, path)
    return sd, args


def test_official_apt_matches_authors_forward(tmp_path):
    path = tmp_path / "checkpoint-best.pth"
    sd, args = write_apt_checkpoint(path)
    model = aptune.create_model("tiny", num_classes=5, method="apt", num_prompts=3, layers=[1, 2],
                                checkpoint=path).eval()
    assert model.checkpoint_report["format"] == "apt-official"
    assert model.blocks[0].kv_prompts is None and model.blocks[3].kv_prompts is None
    torch.testing.assert_close(model.blocks[2].kv_prompts.scale, sd["prompt_scale"][1], rtol=0, atol=0)
    x = clip()
    with torch.no_grad():
        torch.testing.assert_close(model(x), authors_apt_logits(sd, args, x, num_heads=4), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("option, kw, value", [
    ("num_prompts", dict(num_prompts=4, layers=[1, 2]), "3"),
    ("layers", dict(num_prompts=3, layers=[0, 1]), "[1, 2]"),
    ("reparam", dict(num_prompts=3, layers=[1, 2], reparam=False), "True"),
])
def test_official_apt_config_disagreement_names_option(tmp_path, option, kw, value):
    path = tmp_path / "apt.pth"
    write_apt_checkpoint(path)
    with pytest.raises(ValueError, match=rf"apt\.{option} .* but {re.escape(value)} in the checkpoint"):
        aptune.create_model("tiny", num_classes=5, method="apt", checkpoint=path, **kw)
    with pytest.raises(ValueError, match=r"method='apt', num_prompts=3"):
        aptune.create_model("tiny", num_classes=5, checkpoint=path)


# ---- official VideoMAE files ----
def test_official_pretrain_roundtrip(tmp_path):
    src = backbone_model()
    enc = {"encoder." + k: v for k, v in src.state_dict().items() if not k.startswith(("fc_norm", "head"))}
    enc.update({"encoder.norm.weight": torch.ones(64), "encoder.norm.bias": torch.zeros(64),
                "encoder_to_decoder.weight": torch.randn(32, 64), "mask_token": torch.zeros(1, 1, 32),
                "decoder.blocks.0.attn.qkv.weight": torch.randn(96, 32), "decoder.head.weight": torch.randn(384, 32)})
    torch.save({"model": enc, "optimizer": {"state": {}}, "epoch": 799,
                "args": argparse.Namespace(model="pretrain_videomae_base_patch16_224")}, tmp_path / "pre.pth")
    model = aptune.create_model("tiny", num_classes=7, method="linear", checkpoint=tmp_path / "pre.pth").eval()
    rep = model.checkpoint_report
    assert rep["format"] == "videomae-pretrain"
    assert set(rep["missing"]) == {"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"}
    assert "encoder.norm.weight" in rep["dropped"] and "mask_token" in rep["dropped"]
    x = clip()
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x)[0], src.forward_features(x)[0], rtol=0, atol=0)


def _deepspeed(sd):
    return {"module": sd, "buffer_names": [], "optimizer": None, "lr_scheduler": None, "ds_version": "0.9.5",
            "global_steps": np.int64(1200), "skipped_steps": 0, "loss_scale": np.float32(1024.0),
            "args": argparse.Namespace(nb_classes=5, fc_drop_rate=0.5)}


@pytest.mark.parametrize("wrap", ["deepspeed", "ddp-model", "state_dict"])
def test_official_finetune_roundtrip(tmp_path, wrap):
    src = backbone_model()
    sd = dict(src.state_dict())
    obj = {"deepspeed": lambda: _deepspeed(sd),
           "ddp-model": lambda: {"model": {"module." + k: v for k, v in sd.items()}, "epoch": 3},
           "state_dict": lambda: {"state_dict": sd}}[wrap]()
    torch.save(obj, tmp_path / "mp_rank_00_model_states.pt")
    model = aptune.create_model("tiny", num_classes=5, checkpoint=tmp_path / "mp_rank_00_model_states.pt").eval()
    assert model.checkpoint_report["format"] == "videomae-finetune"
    assert model.checkpoint_report["missing"] == []
    x = clip()
    with torch.no_grad():
        torch.testing.assert_close(model(x), src(x), rtol=0, atol=0)


def test_aptune_state_dict_with_method_roundtrip(tmp_path):
    src = randomise(aptune.create_model("tiny", num_classes=5, method="apt", num_prompts=4)).eval()
    save_file(dict(src.state_dict()), str(tmp_path / "full.safetensors"))
    model = aptune.create_model("tiny", num_classes=5, method="apt", num_prompts=4,
                                checkpoint=tmp_path / "full.safetensors").eval()
    assert model.checkpoint_report["format"] == "aptune" and model.checkpoint_report["missing"] == []
    x = clip()
    with torch.no_grad():
        torch.testing.assert_close(model(x), src(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"blocks\.0\.kv_prompts\.key.*same method"):
        aptune.create_model("tiny", num_classes=5, checkpoint=tmp_path / "full.safetensors")


# ---- Hugging Face ----
def _hf_classifier(tmp_path, **kw):
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification
    cfg = VideoMAEConfig(**TINY, id2label={i: f"action{i}" for i in range(5)}, use_mean_pooling=True,
                         qkv_bias=True, **kw)
    hf = randomise(VideoMAEForVideoClassification(cfg)).eval()
    hf.save_pretrained(tmp_path / "hf")
    return hf, tmp_path / "hf"


def _hf_logits(hf, x):
    with torch.no_grad():
        return hf(pixel_values=x.permute(0, 2, 1, 3, 4)).logits      # HF takes (B, T, C, H, W)


def test_hf_classifier_folder_matches_transformers(tmp_path):
    hf, folder = _hf_classifier(tmp_path)
    x = clip()
    ref = _hf_logits(hf, x)
    cfg = read_checkpoint(folder).config
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.mlp_ratio, cfg.num_classes) == (64, 4, 4, 4.0, 5)
    assert (cfg.norm_eps, cfg.fc_norm_eps) == (1e-12, 1e-5)
    for model in (aptune.create_model(folder), aptune.create_model("tiny", num_classes=5, checkpoint=folder)):
        model.eval()
        assert model.checkpoint_report["format"] == "hf-videomae" and model.checkpoint_report["missing"] == []
        assert model.blocks[0].norm1.eps == 1e-12 and model.fc_norm.eps == 1e-5    # the folder's eps
        with torch.no_grad():
            torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-5)
    assert any("eps" in n for n in model.checkpoint_report["notes"])
    assert model.class_names == [f"action{i}" for i in range(5)]


def test_hf_key_layouts_v4_and_v5_agree(tmp_path):
    from safetensors.torch import load_file
    hf, folder = _hf_classifier(tmp_path)
    saved = load_file(str(folder / "model.safetensors"))
    x = clip()
    ref = _hf_logits(hf, x)
    v5 = {k: v.contiguous() for k, v in hf.state_dict().items()}         # transformers 5 names in memory
    assert "videomae.encoder.layer.0.attention.attention.query.bias" in v5
    v4 = {k.replace("query.bias", "q_bias").replace("value.bias", "v_bias"): v for k, v in v5.items()}
    for name, state in (("saved", saved), ("v5", v5), ("v4", v4)):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text((folder / "config.json").read_text())
        save_file(state, str(d / "model.safetensors"))
        model = aptune.create_model(d).eval()
        with torch.no_grad():
            torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-5, msg=name)


def test_hf_videomae_model_features(tmp_path):
    from transformers import VideoMAEConfig, VideoMAEModel
    hf = randomise(VideoMAEModel(VideoMAEConfig(**TINY, use_mean_pooling=True))).eval()
    hf.save_pretrained(tmp_path / "enc")
    torch.save(hf.state_dict(), tmp_path / "enc.bin")                       # bare file, no prefix, no config
    x = clip()
    with torch.no_grad():
        ref = hf(pixel_values=x.permute(0, 2, 1, 3, 4)).last_hidden_state  # (B, N, C), no final norm
    model = aptune.create_model(tmp_path / "enc").eval()
    assert model.config.num_classes == 0
    assert set(model.checkpoint_report["missing"]) == {"fc_norm.weight", "fc_norm.bias"}
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x)[0], ref, rtol=1e-5, atol=1e-5)
    bare = aptune.create_model(read_checkpoint(tmp_path / "enc").config, checkpoint=tmp_path / "enc.bin").eval()
    with torch.no_grad():
        torch.testing.assert_close(bare.forward_features(x)[0], ref, rtol=1e-5, atol=1e-5)


def test_hf_pretraining_folder_drops_decoder_and_final_norm(tmp_path):
    from transformers import VideoMAEConfig, VideoMAEForPreTraining
    cfg = VideoMAEConfig(**TINY, use_mean_pooling=False, decoder_hidden_size=32, decoder_num_attention_heads=2,
                         decoder_intermediate_size=64, decoder_num_hidden_layers=1)
    hf = randomise(VideoMAEForPreTraining(cfg)).eval()
    hf.save_pretrained(tmp_path / "pre")
    model = aptune.create_model(tmp_path / "pre", num_classes=3, method="linear").eval()
    rep = model.checkpoint_report
    assert {"videomae.layernorm.weight", "mask_token", "encoder_to_decoder.weight"} <= set(rep["dropped"])
    assert set(rep["missing"]) == {"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias"}
    x = clip()
    with torch.no_grad():   # the encoder's tokens before HF's final LayerNorm
        ref = hf.videomae.encoder(hf.videomae.embeddings(x.permute(0, 2, 1, 3, 4), None)).last_hidden_state
        torch.testing.assert_close(model.forward_features(x)[0], ref, rtol=1e-5, atol=1e-5)


def test_hf_config_mismatch_names_field(tmp_path):
    _, folder = _hf_classifier(tmp_path)
    with pytest.raises(ValueError, match=r"VideoMAEConfig\.depth is 2 in the model but 4"):
        aptune.create_model(aptune.models.zoo.get_config("tiny", depth=2), checkpoint=folder)


# ---- safety and errors ----
def _side_effect(path):
    open(path, "w").write("pwned")
    return {}


class Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (_side_effect, (self.path,))


@pytest.mark.parametrize("zipfile", [True, False])
def test_pickle_with_code_is_refused_and_not_executed(tmp_path, zipfile):
    marker = tmp_path / "executed"
    torch.save({"model": {"w": torch.zeros(2)}, "payload": Payload(str(marker))}, tmp_path / "evil.pth",
               _use_new_zipfile_serialization=zipfile)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pth.*_side_effect"):
        aptune.create_model("tiny", checkpoint=tmp_path / "evil.pth")
    assert not marker.exists()


def test_unreadable_files_name_the_file(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    for name in ("junk.pth", "empty.safetensors"):
        with pytest.raises(ValueError, match=rf"{name}: not a readable"):
            aptune.create_model("tiny", checkpoint=tmp_path / name)
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"no model\.safetensors or pytorch_model\.bin"):
        aptune.create_model("tiny", checkpoint=tmp_path / "hf")


def test_unknown_layout_names_keys_and_formats(tmp_path):
    torch.save({"foo.weight": torch.zeros(3), "bar.bias": torch.zeros(3)}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match=r"x\.pt.*foo\.weight.*understood formats.*hf-videomae"):
        aptune.create_model("tiny", checkpoint=tmp_path / "x.pt")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        aptune.create_model("tiny", checkpoint=tmp_path / "nope.pth")


def test_wrong_width_names_field(tmp_path):
    other = aptune.create_model(aptune.models.zoo.get_config("tiny", embed_dim=32, num_heads=2), num_classes=5)
    torch.save({"module": other.state_dict()}, tmp_path / "narrow.pth")
    with pytest.raises(ValueError,
                       match=r"patch_embed\.proj\.weight.*VideoMAEConfig\.embed_dim: model 64, checkpoint 32"):
        aptune.create_model("tiny", num_classes=5, checkpoint=tmp_path / "narrow.pth")


def test_missing_backbone_tensor_is_an_error(tmp_path):
    sd = dict(backbone_model().state_dict())
    del sd["blocks.2.mlp.fc1.weight"]
    torch.save({"module": sd}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"missing.*blocks\.2\.mlp\.fc1\.weight"):
        aptune.create_model("tiny", num_classes=5, checkpoint=tmp_path / "partial.pth")


def test_head_of_other_size_is_skipped_with_note(tmp_path):
    src = backbone_model(num_classes=400)
    torch.save(_deepspeed(dict(src.state_dict())), tmp_path / "k400.pth")
    model = aptune.create_model("tiny", num_classes=101)
    head_before = model.head.weight.clone()
    with pytest.warns(UserWarning, match="head"):
        rep = load_checkpoint(model, tmp_path / "k400.pth")
    assert set(rep["skipped"]) == {"head.weight", "head.bias"}
    assert any("(400, 64)" in n and "(101, 64)" in n for n in rep["notes"])
    assert torch.equal(model.head.weight, head_before)
    assert torch.equal(model.fc_norm.weight, src.fc_norm.weight)
    x = clip()
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(model.forward_head(*model.forward_features(x), pre_logits=True),
                                   src.forward_head(*src.forward_features(x), pre_logits=True), rtol=0, atol=0)


# ---- position tables ----
def test_learned_pos_embed_interpolated_to_more_frames(tmp_path):
    from aptune.models.zoo import get_config
    src = aptune.create_model(get_config("tiny", learnable_pos_embed=True), num_classes=5)   # grid (2, 4, 4)
    with torch.no_grad():   # constant over time at each (h, w), so time interpolation is exact there
        src.pos_embed.copy_(torch.randn(1, 1, 16, 64).expand(1, 2, 16, 64).reshape(1, 32, 64))
    torch.save({"module": src.state_dict()}, tmp_path / "learned.pth")
    model = aptune.create_model(get_config("tiny", learnable_pos_embed=True), num_classes=5, num_frames=8,
                                checkpoint=tmp_path / "learned.pth")                            # grid (4, 4, 4)
    assert model.pos_embed.shape == (1, 64, 64)
    grid = model.pos_embed.detach().reshape(4, 16, 64)
    for t in range(4):
        torch.testing.assert_close(grid[t], src.pos_embed[0, :16].detach(), rtol=0, atol=1e-6)
    # a general table against F.interpolate called plainly
    with torch.no_grad():
        src.pos_embed.normal_()
    torch.save({"module": src.state_dict()}, tmp_path / "learned2.pth")
    with pytest.raises(ValueError, match=r"32 tokens: cannot tell its \(t, h, w\) grid"):   # 2x4x4 or 8x2x2?
        aptune.create_model(get_config("tiny", learnable_pos_embed=True), num_classes=5, num_frames=8,
                            img_size=48, checkpoint=tmp_path / "learned2.pth")
    args = argparse.Namespace(num_frames=4, input_size=32, tubelet_size=2)    # the official code's args say
    torch.save({"module": src.state_dict(), "args": args}, tmp_path / "learned2.pth")
    model = aptune.create_model(get_config("tiny", learnable_pos_embed=True), num_classes=5, num_frames=8,
                                img_size=48, checkpoint=tmp_path / "learned2.pth")              # grid (4, 6, 6)
    ref = F.interpolate(src.pos_embed.detach().reshape(1, 2, 4, 4, 64).permute(0, 4, 1, 2, 3), size=(4, 6, 6),
                        mode="trilinear", align_corners=False).permute(0, 2, 3, 4, 1).reshape(1, 144, 64)
    torch.testing.assert_close(model.pos_embed.detach(), ref)
    assert any("interpolated" in n for n in model.checkpoint_report["notes"])
    assert model(clip(1, 8, 48)).shape == (1, 5)


def test_fixed_pos_table_in_checkpoint_is_dropped(tmp_path):
    sd = dict(backbone_model().state_dict())
    sd["pos_embed"] = sincos_table(32, 64)
    torch.save({"module": sd}, tmp_path / "sincos.pth")
    model = aptune.create_model("tiny", num_classes=5, num_frames=8, checkpoint=tmp_path / "sincos.pth")
    assert "pos_embed" in model.checkpoint_report["skipped"]
    assert any("sin-cos" in n for n in model.checkpoint_report["notes"])


# ---- the command ----
def test_inspect_checkpoint_command(tmp_path, capsys):
    from aptune.cli import main
    write_apt_checkpoint(tmp_path / "apt.pth")
    assert main(["inspect-checkpoint", str(tmp_path / "apt.pth"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "apt-official"
    assert info["apt"] == {"num_prompts": 3, "layers": "1..2", "reparam": True}
    assert info["hints"]["embed_dim"] == 64 and info["hints"]["depth"] == 4 and info["hints"]["num_heads"] == 4
    torch.save({"foo": torch.zeros(1)}, tmp_path / "bad.pt")
    assert main(["inspect-checkpoint", str(tmp_path / "bad.pt")]) == 2
    assert "understood formats" in capsys.readouterr().err
