"""VideoMAE pre-training: tube masking, targets, visible-token encoder, loss going down,
the official checkpoint layout and loading it back with create_model."""
import numpy as np
import pytest
import torch

from aptune import create_model, get_config
from aptune.cli import main
from aptune.config import Config
from aptune.pretrain import (
    MaskedVideoAutoencoder,
    backbone_state_from_pretrain,
    pretrain,
    pretrain_dataset,
    pretrain_entries,
    read_pretrain_config,
    reconstruction_target,
    tube_mask,
)

TINY = get_config("tiny")            # 4 frames of 32x32, patch 8, tubelet 2 -> grid (2, 4, 4)


def _cfg(tmp=None, optim=None, **pretrain_kw):
    """A pre-training run config for the tiny model: lr 1e-3 at batch 2 (0.128 per 256)."""
    p = dict(decoder_dim=32, decoder_depth=1, decoder_heads=2, mask_ratio=0.75)
    p.update(pretrain_kw)
    o = dict(epochs=1, batch_size=2, lr=0.128, min_lr=0.00128, warmup_epochs=0, betas=[0.9, 0.95], clip_grad=1.0)
    o.update(optim or {})
    return Config.from_dict({"model": {"name": "tiny"}, "data": {"num_frames": 4, "img_size": 32, "sampling_rate": 2,
                                                                 "num_workers": 0},
                             "optim": o, "pretrain": p, "runtime": {"device": "cpu"},
                             "output": {"dir": str(tmp or "runs/pt")}})


def test_tube_mask_hides_the_same_places_at_every_time_step():
    m = tube_mask(3, (2, 4, 4), 0.9, torch.Generator().manual_seed(0))
    assert m.shape == (3, 32) and m.dtype == torch.bool
    per_t = m.view(3, 2, 16)
    assert torch.equal(per_t[:, 0], per_t[:, 1])                       # a tube through time
    assert (per_t[:, 0].sum(1) == round(0.9 * 16)).all()               # 14 of 16 places hidden
    assert not torch.equal(per_t[0, 0], per_t[1, 0])                   # random per sample


def test_targets_are_per_patch_normalised_pixels():
    torch.manual_seed(0)
    video = torch.randn(1, 3, 4, 32, 32)
    t = reconstruction_target(video, 2, 8, norm_pix=True)
    assert t.shape == (1, 32, 2 * 8 * 8 * 3)
    # token 5 = (t=0, h=1, w=1): frames 0-1, rows 8-15, cols 8-15; plain formula per channel
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1, 1)
    pix = video[0] * std + mean                                          # (3, T, H, W) in [0, 1] scale
    patch = pix[:, 0:2, 8:16, 8:16].reshape(3, -1).T                     # (t*p*p, 3)
    ref = (patch - patch.mean(0)) / (patch.var(0, unbiased=True) + 1e-6).sqrt()
    torch.testing.assert_close(t[0, 5].view(-1, 3), ref)
    raw = reconstruction_target(video, 2, 8, norm_pix=False)
    torch.testing.assert_close(raw[0, 5].view(-1, 3), patch)


def test_visible_tokens_match_the_backbone_patch_embedding():
    model = MaskedVideoAutoencoder(TINY, _cfg().pretrain)
    video = torch.randn(2, 3, 4, 32, 32)
    mask = tube_mask(2, TINY.grid(), 0.75)
    enc = model.encoder
    full = enc.patch_embed(video) + enc.position_embedding(32)          # the fine-tuning path
    ref = full[~mask].view(2, -1, TINY.embed_dim)
    torch.testing.assert_close(model.embed_visible(video, mask), ref, atol=1e-5, rtol=1e-5)
    pred = model(video, mask)
    assert pred.shape == (2, int(mask[0].sum()), 3 * 2 * 8 * 8)


def test_a_few_steps_lower_the_reconstruction_loss():
    torch.manual_seed(0)
    model = MaskedVideoAutoencoder(TINY, _cfg().pretrain)
    # a smooth, learnable video: moving gradient
    t = torch.linspace(0, 1, 4).view(1, 1, 4, 1, 1)
    x = torch.linspace(0, 1, 32).view(1, 1, 1, 1, 32)
    video = torch.sin(6 * (x + 0.2 * t) + torch.arange(3).view(1, 3, 1, 1, 1)).expand(4, 3, 4, 32, 32).contiguous()
    mask = tube_mask(4, TINY.grid(), 0.75, torch.Generator().manual_seed(1))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    with torch.no_grad():
        before = model.loss(video, mask).item()
    for _ in range(40):
        loss = model.loss(video, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = model.loss(video, mask).item()
    assert after < 0.7 * before, (before, after)


def test_checkpoint_layout_and_load_back(tmp_path):
    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 255, (6, 36, 36, 3), dtype=np.uint8) for _ in range(4)]
    out = tmp_path / "pt.pth"
    res = pretrain(_cfg(optim={"epochs": 2}, out=str(out)), clips, progress=False, log=lambda *_: None)
    assert len(res["history"]) == 2 and res["steps"] == 4 and res["out"] == str(out)
    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    keys = set(ckpt["model"])
    for k in ("encoder.patch_embed.proj.weight", "encoder.blocks.0.attn.qkv.weight", "encoder.blocks.0.attn.q_bias",
              "encoder.blocks.0.attn.v_bias", "encoder.blocks.3.mlp.fc2.weight", "encoder.norm.weight",
              "decoder.blocks.0.attn.qkv.weight", "decoder.head.weight", "encoder_to_decoder.weight", "mask_token"):
        assert k in keys, k
    assert not any(k.startswith(("encoder.fc_norm", "encoder.head", "fc_norm", "head")) for k in keys)
    assert read_pretrain_config(out) == TINY
    net = create_model("tiny", num_classes=5, checkpoint=out)
    own = net.state_dict()
    enc = backbone_state_from_pretrain(ckpt["model"])
    assert len(enc) == len([k for k in own if not k.startswith(("fc_norm", "head"))])
    for k, v in enc.items():
        torch.testing.assert_close(own[k], v, msg=k)
    trained = res["model"].encoder.state_dict()
    torch.testing.assert_close(own["blocks.2.attn.qkv.weight"], trained["blocks.2.attn.qkv.weight"])


def test_the_data_pipeline_makes_the_training_clips(tmp_path):
    """Pre-training clips come from the data pipeline: its sampling, crops and the backbone's normalisation."""
    white = np.full((10, 40, 40, 3), 255, np.uint8)
    ds = pretrain_dataset(_cfg(), videos=[white, np.zeros((3, 40, 40, 3), np.uint8)])  # the second: too short
    clip, _, _ = ds[0]
    assert clip.shape == (3, 4, 32, 32)
    torch.testing.assert_close(clip[:, 0, 0, 0], (1 - torch.tensor([0.485, 0.456, 0.406])) /
                               torch.tensor([0.229, 0.224, 0.225]))
    assert ds[1][0].shape == (3, 4, 32, 32) and ds.padded.tolist() == [False, True]


def test_cli_pretrain_on_a_folder(tmp_path):
    import yaml

    from aptune.data.synthetic import SynthConfig, generate_unlabeled
    generate_unlabeled(tmp_path / "u", 3, seed=5, cfg=SynthConfig(frames=8, size=32), progress=False)
    assert len(pretrain_entries(tmp_path / "u" / "unlabeled.txt")) == 3
    assert len(pretrain_entries(tmp_path / "u")) == 3
    cfg = _cfg(tmp_path / "run", half=True).to_dict()
    cfg.pop("method")
    (tmp_path / "pt.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "ckpt.pth"
    rc = main(["pretrain", str(tmp_path / "pt.yaml"), "--videos", str(tmp_path / "u"), "--out", str(out),
               "--no-progress", "pretrain.mask_ratio=0.9"])
    assert rc == 0
    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    assert ckpt["model"]["encoder.blocks.0.attn.qkv.weight"].dtype == torch.float16
    assert ckpt["aptune"]["pretrain"]["mask_ratio"] == 0.9
    assert ckpt["aptune"]["recipe"]["data"]["train_list"] == str(tmp_path / "u")
    create_model("tiny", num_classes=3, checkpoint=out)
    assert main(["pretrain", str(tmp_path / "pt.yaml"), "--videos", str(tmp_path / "nothing")]) == 2
    assert main(["pretrain", str(tmp_path / "pt.yaml"), "--videos", str(tmp_path / "u"),
                 "pretrain.mask_ratio=1.5"]) == 2
    if not torch.cuda.is_available():                                   # a GPU asked for where there is none
        assert main(["pretrain", str(tmp_path / "pt.yaml"), "--videos", str(tmp_path / "u"),
                     "runtime.device=cuda"]) == 2
    assert main(["pretrain", str(repo_config()), "--videos", str(tmp_path / "u"), "--out", str(tmp_path / "d.pth"),
                 "optim.epochs=1", "pretrain.max_minutes=null", "--no-progress"]) == 0   # the shipped recipe runs


def repo_config():
    from pathlib import Path
    return Path(__file__).resolve().parents[1] / "configs" / "pretrain" / "videomae_demo.yaml"


def test_bf16_autocast_keeps_float32_weights(tmp_path):
    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 255, (6, 36, 36, 3), dtype=np.uint8) for _ in range(4)]
    cfg = _cfg(out=str(tmp_path / "pt.pth"))
    cfg.runtime.amp = "bf16"
    res = pretrain(cfg, clips, progress=False, log=lambda *_: None)
    assert np.isfinite(res["history"][0]["loss"])
    ckpt = torch.load(tmp_path / "pt.pth", map_location="cpu", weights_only=True)
    assert all(v.dtype == torch.float32 for v in ckpt["model"].values())


def test_bad_config_is_named():
    from aptune.config import validate_pretrain
    with pytest.raises(ValueError, match=r"pretrain\.decoder_dim"):
        validate_pretrain(_cfg(decoder_dim=30, decoder_heads=4), need_videos=False)
    with pytest.raises(ValueError, match=r"data\.train_list"):
        validate_pretrain(_cfg())


def test_matches_hugging_face_videomae_for_pretraining():
    """Same weights, same clip, same tube mask: aptune's masked autoencoder gives the predictions
    and the normalised-pixel loss of transformers' VideoMAEForPreTraining (an independent
    implementation of the official model), with weights mapped name by name below."""
    from transformers import VideoMAEConfig, VideoMAEForPreTraining

    from aptune.models.checkpoints import Source
    from aptune.models.videomae.formats import _HF_RENAME, _convert_hf
    hf_cfg = VideoMAEConfig(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256,
                            patch_size=8, tubelet_size=2, num_frames=4, image_size=32, use_mean_pooling=False,
                            layer_norm_eps=1e-6, norm_pix_loss=True, decoder_hidden_size=32,
                            decoder_num_attention_heads=2, decoder_intermediate_size=128, decoder_num_hidden_layers=2)
    torch.manual_seed(0)
    hf = VideoMAEForPreTraining(hf_cfg).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():                        # perturb everything, so a misplaced tensor shows
        for p in hf.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    hf.decoder.norm.eps = 1e-6                   # HF's decoder norm uses LayerNorm's default 1e-5

    p = _cfg(decoder_dim=32, decoder_depth=2, decoder_heads=2, norm_pix_eps=1e-6).pretrain
    ours = MaskedVideoAutoencoder(TINY, p)
    sd = hf.state_dict()
    state = {f"encoder.{k}": v for k, v in _convert_hf(sd, Source('hf')).state.items()}
    state.update({"encoder.norm.weight": sd["videomae.layernorm.weight"],
                  "encoder.norm.bias": sd["videomae.layernorm.bias"],
                  "encoder_to_decoder.weight": sd["encoder_to_decoder.weight"], "mask_token": sd["mask_token"],
                  "decoder.norm.weight": sd["decoder.norm.weight"], "decoder.norm.bias": sd["decoder.norm.bias"],
                  "decoder.head.weight": sd["decoder.head.weight"], "decoder.head.bias": sd["decoder.head.bias"]})
    for i in range(2):
        pre = f"decoder.decoder_layers.{i}."
        qkv = [sd[f"{pre}attention.attention.{n}.weight"] for n in ("query", "key", "value")]
        state[f"decoder.blocks.{i}.attn.qkv.weight"] = torch.cat(qkv)
        for k, v in sd.items():
            if k.startswith(pre) and k[len(pre):] in _HF_RENAME:
                state[f"decoder.blocks.{i}.{_HF_RENAME[k[len(pre):]]}"] = v
    missing, unexpected = ours.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("encoder.fc_norm") or k.startswith("encoder.head") for k in missing)
    ours.eval()

    video = torch.randn(2, 3, 4, 32, 32)                                 # normalised clip (B, C, T, H, W)
    mask = tube_mask(2, TINY.grid(), 0.75, torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(video.permute(0, 2, 1, 3, 4), bool_masked_pos=mask)     # HF takes (B, T, C, H, W)
        pred = ours(video, mask)
        loss = ours.loss(video, mask)
    torch.testing.assert_close(pred, ref.logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(loss, ref.loss, rtol=1e-4, atol=1e-5)
    assert loss > 0.5                            # random weights: far from the targets, so a real comparison


def test_init_continues_from_a_pretraining_checkpoint(tmp_path):
    from aptune.pretrain import load_autoencoder_weights
    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 255, (6, 36, 36, 3), dtype=np.uint8) for _ in range(4)]
    first = tmp_path / "first.pth"
    pretrain(_cfg(out=str(first)), clips, progress=False, log=lambda *_: None)
    saved = torch.load(first, map_location="cpu", weights_only=True)["model"]
    fresh = MaskedVideoAutoencoder(TINY, _cfg().pretrain)
    assert not torch.equal(fresh.state_dict()["decoder.head.weight"], saved["decoder.head.weight"])
    load_autoencoder_weights(fresh, first)
    for k, v in saved.items():
        torch.testing.assert_close(fresh.state_dict()[k], v, msg=k)
    # a run started from it with a zero learning rate writes the same weights back
    again = tmp_path / "again.pth"
    pretrain(_cfg(optim={"lr": 0.0, "min_lr": 0.0, "weight_decay": 0.0}, out=str(again), init=str(first)), clips,
             progress=False, log=lambda *_: None)
    written = torch.load(again, map_location="cpu", weights_only=True)
    for k, v in written["model"].items():
        torch.testing.assert_close(v, saved[k], msg=k)
    # the continued checkpoint keeps the recipe of the one it started from
    first_meta = torch.load(first, map_location="cpu", weights_only=True)["aptune"]
    assert written["aptune"]["init"]["file"] == "first.pth"
    assert written["aptune"]["init"]["history"] == first_meta["history"]
    assert written["aptune"]["recipe"]["optim"]["lr"] == 0.0 and first_meta["recipe"]["optim"]["lr"] != 0.0
    with pytest.raises(ValueError, match=r"first\.pth: shapes differ.*decoder"):
        pretrain(_cfg(decoder_dim=48, out=str(tmp_path / "x.pth"), init=str(first)), clips, progress=False)
    with pytest.raises(ValueError, match=r"not a VideoMAE pre-training checkpoint"):
        torch.save({"model": {"encoder.norm.weight": torch.ones(64)}}, tmp_path / "bad.pth")
        pretrain(_cfg(out=str(tmp_path / "y.pth"), init=str(tmp_path / "bad.pth")), clips, progress=False)
