"""A transformers `VideoMAEForVideoClassification` folder: config.json, model.safetensors and
preprocessor_config.json, loadable with `from_pretrained` and `pipeline("video-classification")`.

What transformers can represent is a plain VideoMAE with its head: linear probing, full fine-tuning,
and LoRA once merged into the weights (`methods.lora.merge_lora`). Every other method puts modules
into the blocks (key/value prompts, prompt tokens, adapters) that transformers' VideoMAE has no place
for: refused, naming what is missing. Where the two differ:

    qkv        aptune's fused qkv Linear is split into query, key and value; the q and v biases go under
               transformers 4's names (`attention.attention.q_bias`), which transformers 5 renames on
               load (its conversion mapping for videomae), so one folder should load in both (tested: 5)
    eps        config.json's layer_norm_eps is the blocks' eps (transformers' default is 1e-12, VideoMAE's
               1e-6). transformers builds fc_norm with torch's default eps 1e-5 whatever the config says,
               so a model whose fc_norm eps differs (the official VideoMAE's 1e-6) moves each normalised
               feature by a factor sqrt((v + eps) / (v + 1e-5)), v the variance of its pooled features:
               under 1e-5 for v > 0.45; the check below measures it
    pooling    use_mean_pooling: the mean of the tokens, then fc_norm, as aptune
    labels     id2label / label2id from the adapter's class names (transformers' LABEL_i without them)
    input      transformers takes pixel_values (batch, frames, channels, H, W); preprocessor_config.json is
               a VideoMAEImageProcessor with the clip's size (short side, then a centre crop), mean and std

The folder is checked before it is put in place: transformers (when installed) loads it and must give
aptune's logits on random clips.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..console import warn
from ..errors import ExportError
from ..io import write_json
from ..methods.lora import merge_lora
from ..models.videomae.formats import _HF_RENAME, _HF_TOP
from .common import Exported, check_logits, prepare, reference, staged

ARCHITECTURE = "VideoMAEForVideoClassification"
FILES = ("model.safetensors", "preprocessor_config.json", "config.json")     # written in this order
HF_FC_NORM_EPS = 1e-5
# what transformers' VideoMAE block lacks, for each method seam of layers.Block
MISSING = {
    "kv_prompts": "no key/value prompts (its attention takes no extra keys or values)",
    "tokens_in": "no prompt tokens in the sequence", "tokens_out": "no prompt tokens in the sequence",
    "attn_adapter": "no learned step on the attention output", "mlp_adapter": "no branch beside the MLP",
    "pre_attn": "no adapter on the residual stream", "pre_mlp": "no adapter on the residual stream",
    "wrap": "no other order of the block's parts",
}


def _inverse(table: dict[str, str]) -> dict[str, str]:
    """aptune name -> transformers name, from the reader's table (models/videomae/formats.py); where two transformers
    names map to one of ours, the first listed: transformers 4's q_bias / v_bias (module docstring)."""
    out: dict[str, str] = {}
    for theirs, ours in table.items():
        out.setdefault(ours, theirs)
    return out


LAYER_NAMES, TOP_NAMES = _inverse(_HF_RENAME), _inverse(_HF_TOP)


def why_not(model) -> str | None:
    """None when transformers' VideoMAEForVideoClassification can hold `model` (LoRA already merged),
    else the reason."""
    c = model.config
    if model.family != "videomae":
        return (f"the {model.family} backbone is an image ViT run frame by frame; {ARCHITECTURE} is VideoMAE's "
                "video ViT")
    if not c.fc_norm:
        return f"the backbone has no fc_norm (fc_norm=False); {ARCHITECTURE} always normalises the pooled features"
    if c.learnable_pos_embed:
        return f"the backbone has a learned position table; {ARCHITECTURE} has only the fixed sin-cos table"
    if c.num_classes < 1:
        return "the model has no classification head (num_classes=0)"
    for i, blk in enumerate(model.blocks):
        for seam, missing in MISSING.items():
            if getattr(blk, seam) is not None:
                return (f"method {model.tuning.name!r} adds {type(getattr(blk, seam)).__name__} to block {i} "
                        f"({seam}), and transformers' VideoMAE has {missing}")
    return None


def hf_state(model) -> dict[str, torch.Tensor]:
    """The model's tensors under transformers' VideoMAEForVideoClassification names."""
    out = {}
    for name, t in model.state_dict().items():
        t = t.detach().contiguous()
        m = re.fullmatch(r"blocks\.(\d+)\.(.+)", name)
        if name in TOP_NAMES:
            theirs = TOP_NAMES[name]
            out[theirs if theirs.startswith(("fc_norm.", "classifier.")) else "videomae." + theirs] = t
        elif m and m.group(2) == "attn.qkv.weight":
            q, k, v = t.chunk(3)                                           # (3C, C) -> 3 x (C, C)
            prefix = f"videomae.encoder.layer.{m.group(1)}.attention.attention."
            out.update({prefix + "query.weight": q.clone(), prefix + "key.weight": k.clone(),
                        prefix + "value.weight": v.clone()})
        elif m and m.group(2) in LAYER_NAMES:
            out[f"videomae.encoder.layer.{m.group(1)}.{LAYER_NAMES[m.group(2)]}"] = t
        else:
            raise ExportError(f"{name}: no place for this tensor in {ARCHITECTURE}")
    return out


def hf_config(model) -> dict:
    """config.json of the folder."""
    c = model.config
    names = getattr(model, "class_names", None) or [f"LABEL_{i}" for i in range(c.num_classes)]
    if len(names) != c.num_classes:
        raise ExportError(f"{len(names)} class names for a head of {c.num_classes} classes")
    if len(set(names)) != len(names):
        warn("class names repeat: label2id keeps one id per name")
    return {
        "architectures": [ARCHITECTURE], "model_type": "videomae",
        "hidden_size": c.embed_dim, "num_hidden_layers": c.depth, "num_attention_heads": c.num_heads,
        "intermediate_size": model.blocks[0].mlp.fc1.out_features, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "layer_norm_eps": c.norm_eps,
        "image_size": c.img_size, "patch_size": c.patch_size, "num_channels": c.in_chans,
        "num_frames": c.num_frames, "tubelet_size": c.tubelet_size, "qv_bias": c.qkv_bias,
        "use_mean_pooling": True, "id2label": {str(i): n for i, n in enumerate(names)},
        "label2id": {n: i for i, n in enumerate(names)},
    }


def preprocessor_config(model) -> dict:
    """preprocessor_config.json: short side to S, a centre S x S crop, /255, the clip's mean and std."""
    c = model.config
    clip = (getattr(model, "adapter_meta", None) or {}).get("clip") or {}
    return {"image_processor_type": "VideoMAEImageProcessor", "do_resize": True,
            "size": {"shortest_edge": c.img_size}, "resample": 2, "do_center_crop": True,
            "crop_size": {"height": c.img_size, "width": c.img_size}, "do_rescale": True,
            "rescale_factor": 1 / 255, "do_normalize": True,
            "image_mean": list(clip.get("mean") or c.mean), "image_std": list(clip.get("std") or c.std)}


def export_hf(model, directory: str | os.PathLike) -> Exported:
    """Write the folder `directory` (new, or one this export wrote before); see the module docstring."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ExportError(f"{directory}: a file is in the way of the folder to write")
    others = sorted(p.name for p in directory.iterdir() if p.name not in FILES) if directory.exists() else []
    if others:
        raise ExportError(f"{directory}: not empty (holds {', '.join(others[:3])}); choose a new folder")
    model = prepare(model)
    want_x, want = reference(model)                 # aptune's logits before LoRA is merged
    merge_lora(model)
    reason = why_not(model)
    if reason:
        raise ExportError(f"cannot export to transformers: {reason}; use --format onnx or --format torch")
    notes = _eps_notes(model)
    with staged(directory / "config.json") as tmp:
        save_file(hf_state(model), str(tmp / FILES[0]), metadata={"format": "pt"})
        write_json(tmp / FILES[1], preprocessor_config(model))
        write_json(tmp / FILES[2], hf_config(model))
        check = _check_with_transformers(tmp, want_x, want, notes)
    return Exported("hf", [directory / f for f in FILES], check, notes)


def _eps_notes(model) -> list[str]:
    c = model.config
    eps = c.norm_eps if c.fc_norm_eps is None else c.fc_norm_eps
    if eps == HF_FC_NORM_EPS:
        return []
    return [f"transformers builds fc_norm with eps {HF_FC_NORM_EPS:g} (this model: {eps:g}); the logits move by "
            "as much as the check says"]


def _check_with_transformers(folder: Path, x: torch.Tensor, want: torch.Tensor, notes: list[str]) -> str:
    """transformers loads the folder and must give aptune's logits; without transformers, say so."""
    try:                        # optional and heavy: only this check uses transformers
        import transformers
        from transformers import VideoMAEForVideoClassification
    except ImportError:
        return "not checked: transformers is not installed"
    transformers.utils.logging.disable_progress_bar()
    try:
        hf = VideoMAEForVideoClassification.from_pretrained(folder).eval()
    finally:
        transformers.utils.logging.enable_progress_bar()
    with torch.no_grad():
        got = hf(pixel_values=x.transpose(1, 2)).logits                     # (B, T, C, H, W) in transformers
    try:
        return check_logits(want, got, f"transformers {transformers.__version__} from_pretrained")
    except ExportError as e:
        raise ExportError(f"{e}{' (' + notes[0] + ')' if notes else ''}") from None
