"""The Table 6 presets (configs/ssv2/clip_b16_*, vit_b16_sup_*, videomae_b_k400sup_*): what they say (the
official recipes), and `aptune train` end to end on a tiny version of each, from a checkpoint in the
backbone's own file layout (OpenAI CLIP, timm, official VideoMAE fine-tuned with a 400-class head)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import aptune
from aptune.config import load_config
from aptune.engine.train import train

from engine_data import make_video_lists

SSV2 = Path(__file__).resolve().parent.parent / "configs" / "ssv2"
ROWS = {"linear", "vpt", "adaptformer4", "adaptformer64", "apt200", "apt400", "apt600", "full", "st_adapter", "aim"}
IMAGE = {"clip_b16": ("clip-vit-b16", "tiny-clip"), "vit_b16_sup": ("vit-b16", "tiny-vit")}
PRESETS = sorted([p for b in IMAGE for p in SSV2.glob(f"{b}_*.yaml")] + list(SSV2.glob("videomae_b_k400sup_*.yaml")))


def backbone_of(path: Path) -> str:
    return next((b for b in IMAGE if path.stem.startswith(b + "_")), "videomae")


def test_every_image_backbone_has_every_table6_row():
    for b in IMAGE:
        assert {p.stem.removeprefix(b + "_") for p in SSV2.glob(f"{b}_*.yaml")} == ROWS
    assert [p.stem for p in SSV2.glob("videomae_b_k400sup_*.yaml")] == ["videomae_b_k400sup_apt200"]


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_presets_state_the_official_recipes(path):
    cfg = load_config(path)
    cfg.validate(check_files=False)
    b, row, o, d = backbone_of(path), path.stem.split("_")[-1], cfg.optim, cfg.data
    if b == "videomae":
        assert cfg.model.name == "videomae-vit-b" and (d.num_frames, d.test_clips, d.test_crops) == (16, 2, 3)
        return
    zoo = IMAGE[b][0]
    assert cfg.model.name == zoo and cfg.model.layout is None and aptune.get_config(zoo).layout == "frames"
    assert (d.num_frames, d.sampling, d.flip, d.test_clips, d.test_crops) == (8, "segment", False, 1, 3)
    name = path.stem.removeprefix(b + "_")
    if name == "aim":      # vitclip_base_sthv2.py / vit_imagenet_ssv2.py: lr 3e-4 at 8 x 8 clips
        assert (o.lr * 64 / 256, o.weight_decay, o.epochs, o.warmup_epochs, o.label_smoothing) == \
            (3e-4, 0.05, 50, 2.5, 0.1)
        assert cfg.method.options == {"mlp_ratio": 0.25, "scale": 1.0, "num_tadapter": 2, "adapter_drop_path": 0.2}
        assert cfg.model.head_dropout == 0.5
    elif name == "st_adapter":   # main.py defaults + train_ssv2_clip_vit_b16_adapter24x384.sh
        assert (o.lr, o.weight_decay, o.epochs, o.warmup_epochs, o.label_smoothing) == (1e-3, 0.01, 50, 2, 0.0)
        assert cfg.method.options["pre_attn"] is True and cfg.method.options["width"] == 384
        assert cfg.model.head_dropout == 0.5
    elif row.startswith("apt"):
        assert cfg.method.options["num_prompts"] == int(row[3:]) and (o.lr, o.epochs) == (0.05, 100)
    elif name.startswith("adaptformer"):
        assert cfg.method.options["bottleneck"] == int(name.removeprefix("adaptformer"))


# ---- aptune train, end to end, on tiny versions ------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_video_lists(tmp_path_factory.mktemp("table6"), n_train=4, n_val=0, n_test=2, num_classes=2)


def openai_file(path: Path) -> str:
    """A tiny CLIP vision tower saved under OpenAI's names."""
    s = aptune.create_model("tiny-clip").state_dict()
    out = {"visual.conv1.weight": s["patch_embed.proj.weight"], "visual.class_embedding": s["cls_token"].flatten(),
           "visual.positional_embedding": s["pos_embed"][0], "visual.proj": torch.randn(64, 16)}
    for k in ("ln_pre", "ln_post"):
        out[f"visual.{k}.weight"], out[f"visual.{k}.bias"] = s[f"{k}.weight"], s[f"{k}.bias"]
    names = {"attn.qkv.weight": "attn.in_proj_weight", "attn.qkv.bias": "attn.in_proj_bias",
             "attn.proj": "attn.out_proj", "norm1": "ln_1", "norm2": "ln_2", "mlp.fc1": "mlp.c_fc",
             "mlp.fc2": "mlp.c_proj"}
    for k, v in s.items():
        if k.startswith("blocks."):
            i, rest = k.split(".", 2)[1:]
            for a, o in names.items():
                rest = rest.replace(a, o) if rest.startswith(a) else rest
            out[f"visual.transformer.resblocks.{i}.{rest}"] = v
    torch.save(out, path)
    return str(path)


def timm_file(path: Path) -> str:
    s = aptune.create_model("tiny-vit", num_classes=1000).state_dict()
    torch.save({k.replace("ln_post.", "norm."): v for k, v in s.items()}, path)
    return str(path)


def videomae_k400_file(path: Path) -> str:
    torch.save({"module": aptune.create_model("tiny", num_classes=400).state_dict()}, path)
    return str(path)


@pytest.mark.filterwarnings("ignore:.*classification head")
@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_train_runs_every_preset_on_a_tiny_version(path, data, tmp_path):
    b = backbone_of(path)
    tiny, ckpt = {"clip_b16": ("tiny-clip", openai_file), "vit_b16_sup": ("tiny-vit", timm_file),
                  "videomae": ("tiny", videomae_k400_file)}[b]
    cfg = load_config(path, [
        f"model.name={tiny}", f"model.checkpoint={ckpt(tmp_path / 'backbone.pth')}",
        f"data.train_list={data['train']}", "data.val_list=null", f"data.test_list={data['test']}",
        f"data.root={data['root']}", "data.num_frames=4", "data.img_size=32", "data.num_workers=0",
        "optim.epochs=1", "optim.warmup_epochs=0", "optim.batch_size=2",
        f"output.dir={tmp_path / 'run'}", "output.tensorboard=false", "runtime.device=cpu"])
    res = train(cfg)
    model = res["model"]
    assert model.tuning.name == cfg.method.name and model.checkpoint_report["loaded"] > 0
    assert model.checkpoint_report["format"] == {"clip_b16": "openai-clip", "vit_b16_sup": "timm-vit",
                                                 "videomae": "videomae-finetune"}[b]
    if b != "clip_b16":      # the file's 1000 / 400-class head does not fit 2 classes: a new head
        assert "head.weight" in model.checkpoint_report["skipped"]
    views = cfg.data.test_clips * cfg.data.test_crops
    assert res["test"]["num_videos"] == 2 and res["test"]["num_views"] == 2 * views
    assert (Path(res["adapter_dir"]) / "adapter.safetensors").exists()
