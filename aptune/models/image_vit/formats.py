"""Checkpoint formats of the image ViT families ("clip", "vit"), recognised by their keys (registered in
`checkpoints.py`'s registry on import). Each turns a flat state dict into aptune's names (`cls_token`,
`pos_embed`, `patch_embed.proj.*`, `ln_pre.*`, `blocks.{i}.attn.qkv.*`, ..., `ln_post.*`, `head.*`) and
states the architecture the file implies (`Converted.config`, what `create_model(path)` builds),
inferred from the tensor shapes as OpenAI's `build_model` does, or read from a Hugging Face config.json:

    hf-clip           Hugging Face CLIPVisionModel / CLIPModel: `[vision_model.]embeddings.class_embedding`,
                      `pre_layrnorm`, `encoder.layers.{i}.self_attn.{q,k,v,out}_proj`, `post_layernorm`
    hf-vit            Hugging Face ViTModel / ViTForImageClassification: `[vit.]embeddings.cls_token`,
                      `encoder.layer.{i}.attention.attention.{query,key,value}` (or transformers 5's in-memory
                      `layers.{i}.attention.{q,k,v,o}_proj`), `layernorm`, `classifier`
    openai-clip       OpenAI CLIP and open_clip: `[visual.]conv1.weight`, `class_embedding`, `positional_embedding`,
                      `ln_pre`, `transformer.resblocks.{i}.attn.in_proj_weight`, `ln_post`, `proj`; the text tower
                      and `proj` are dropped. OpenAI's TorchScript archives are read as tensors by `torchscript.py`.
    timm-vit          timm's VisionTransformer: `cls_token`, `pos_embed`, `blocks.{i}.attn.qkv`, `norm`, `head`
    aptune-image-vit  aptune's own image ViT state dict (`ln_post`, for CLIP `ln_pre`)

What the keys cannot say, and what is assumed then:
    num_heads   width / 64 (OpenAI's rule; 16 for widths 1280, 1408, 1664: ViT-H, -g, -bigG); a Hugging Face
                config.json states it
    activation  QuickGELU for the CLIP layouts (OpenAI's weights, open_clip's `-quickgelu` models), GELU for
                timm; LAION's open_clip models use GELU: build `replace(get_config("clip-vit-b16"), act="gelu")`
    norm eps    the model's (CLIP 1e-5, timm 1e-6); a Hugging Face folder's `layer_norm_eps` is set on the model
    mean, std   CLIP's, or 0.5 for the supervised ViT (Google's weights; DeiT's want ImageNet's); a Hugging Face
                folder's preprocessor_config.json, when present, gives them
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch

from ...errors import CheckpointError
from ..checkpoints import Converted, Source, register_format
from .model import CLIPViTConfig, SupViTConfig

DROP = "drop"
STRUCTURE_FIELDS = ("embed_dim", "depth", "patch_size", "in_chans", "mlp_ratio", "qkv_bias", "patch_bias", "ln_pre")
WIDE_HEADS = {1280: 16, 1408: 16, 1664: 16}     # ViT-H/14, ViT-g/14, ViT-bigG/14: head_dim 80, 88, 104


# ---- shared conversion ---------------------------------------------------------------------------
def _convert(name: str, family: str, state: dict, rename) -> Converted:
    """Apply `rename(key) -> aptune key | DROP | ("qkv", block, part, kind) | None (unknown)` to every key,
    joining q, k and v into the fused `attn.qkv`; class token and position table get their (1, L, C) shapes."""
    out = Converted(name, {}, family=family)
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for k, v in state.items():
        new = rename(k)
        if new == DROP:
            out.dropped.append(k)
        elif new is None:
            out.unknown.append(k)
        elif isinstance(new, tuple):
            _, i, part, kind = new
            qkv.setdefault((i, kind), {})[part] = v
        else:
            out.state[new] = v
    for (i, kind), parts in sorted(qkv.items()):
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(f"{name}: block {i} has {kind}s for {sorted(parts)} only; need q, k and v")
        out.state[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    C = out.state["cls_token"].shape[-1] if "cls_token" in out.state else None
    for key in ("cls_token", "pos_embed"):
        if key in out.state:
            out.state[key] = out.state[key].reshape(1, -1, C)
    return out


def _heads(width: int) -> int:
    return WIDE_HEADS.get(width, max(width // 64, 1))


def infer_config(state: dict, cls, num_heads: int | None = None, **known):
    """The config converted tensors imply (num_frames left at its default)."""
    w = state.get("patch_embed.proj.weight")                       # (C, in, p, p)
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"^blocks\.(\d+)\.attn\.qkv\.weight$", k))}
    if w is None or w.ndim != 4 or not blocks or "pos_embed" not in state:
        return None
    C, p = w.shape[0], w.shape[-1]
    s = math.isqrt(state["pos_embed"].shape[1] - 1)
    head = state.get("head.weight")
    fields = dict(embed_dim=C, depth=max(blocks) + 1, num_heads=num_heads or _heads(C),
                  mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / C, patch_size=p, in_chans=w.shape[1],
                  img_size=s * p, qkv_bias="blocks.0.attn.qkv.bias" in state,
                  patch_bias="patch_embed.proj.bias" in state, ln_pre="ln_pre.weight" in state,
                  num_classes=head.shape[0] if head is not None else 0)
    return cls(**{**fields, **known})


def _finish(out: Converted, cls, source: Source, stated: dict | None = None) -> Converted:
    """Config, hints, check (and eps, from a Hugging Face config) of a converted image ViT file."""
    stated = stated or {}
    out.config = infer_config(out.state, cls, **stated)
    if out.config is None:
        return out
    cfg = out.config
    out.hints = {f: getattr(cfg, f) for f in STRUCTURE_FIELDS + ("num_classes",)}
    from_config = "num_heads" in stated           # a Hugging Face config.json
    if not from_config:
        out.notes.append(f"num_heads = {cfg.num_heads}: not stored in the file, taken as width / 64 (OpenAI's rule)")
    checked = STRUCTURE_FIELDS + (("num_heads", "act") if from_config else ())

    def check(model, src: str) -> None:
        for f in checked:
            a, b = getattr(model.config, f, None), getattr(cfg, f)
            if a != b:
                raise CheckpointError(f"{src}: {type(model.config).__name__}.{f} is {a} in the model but {b} in the "
                                      f"checkpoint ({out.format}); build the model from it (create_model('{src}'))")

    def finish(model, report: dict) -> None:
        if from_config and model.config.norm_eps != cfg.norm_eps:
            report["notes"].append(f"LayerNorm eps set from config.json: {cfg.norm_eps:g} "
                                   f"(model had {model.config.norm_eps:g})")
            model.set_norm_eps(cfg.norm_eps)

    out.check, out.finish = check, finish
    return out


# ---- OpenAI CLIP, open_clip ----------------------------------------------------------------------
_CLIP_BLOCK = {  # inside transformer.resblocks.{i}.
    "attn.in_proj_weight": "attn.qkv.weight", "attn.in_proj_bias": "attn.qkv.bias",
    "attn.out_proj.weight": "attn.proj.weight", "attn.out_proj.bias": "attn.proj.bias",
    "ln_1.weight": "norm1.weight", "ln_1.bias": "norm1.bias", "ln_2.weight": "norm2.weight", "ln_2.bias": "norm2.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight", "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight", "mlp.c_proj.bias": "mlp.fc2.bias",
}
_CLIP_TOP = {"conv1.weight": "patch_embed.proj.weight", "class_embedding": "cls_token",
             "positional_embedding": "pos_embed", "ln_pre.weight": "ln_pre.weight", "ln_pre.bias": "ln_pre.bias",
             "ln_post.weight": "ln_post.weight", "ln_post.bias": "ln_post.bias", "proj": DROP}
_JIT_EXTRAS = ("input_resolution", "context_length", "vocab_size")   # stored in OpenAI's archives, not weights


def _is_openai(state: dict, source: Source) -> bool:
    return any(k in state for k in ("visual.conv1.weight", "conv1.weight")) and \
        any(k in state for k in ("visual.class_embedding", "class_embedding"))


def _convert_openai(state: dict, source: Source) -> Converted:
    prefix = "visual." if "visual.conv1.weight" in state else ""

    def rename(k: str):
        if not k.startswith(prefix) or k.split(".")[-1] in _JIT_EXTRAS:
            return DROP                                           # the text tower, logit_scale, archive extras
        name = k[len(prefix):]
        m = re.match(r"^transformer\.resblocks\.(\d+)\.(.+)$", name)
        if m:
            new = _CLIP_BLOCK.get(m.group(2))
            return f"blocks.{m.group(1)}.{new}" if new else None
        return _CLIP_TOP.get(name)

    out = _convert("openai-clip", "clip", state, rename)
    if prefix and any(not k.startswith(prefix) for k in state):
        out.notes.append("text tower not used (only visual.* is read)")
    if any(k.endswith(".proj") or k == "proj" for k in out.dropped):
        out.notes.append("visual.proj (the image-text projection) not used: features are ln_post of the class token")
    return _finish(out, CLIPViTConfig, source)


# ---- Hugging Face CLIP ---------------------------------------------------------------------------
_HF_CLIP_BLOCK = {"self_attn.out_proj.weight": "attn.proj.weight", "self_attn.out_proj.bias": "attn.proj.bias",
                  "layer_norm1.weight": "norm1.weight", "layer_norm1.bias": "norm1.bias",
                  "layer_norm2.weight": "norm2.weight", "layer_norm2.bias": "norm2.bias",
                  "mlp.fc1.weight": "mlp.fc1.weight", "mlp.fc1.bias": "mlp.fc1.bias",
                  "mlp.fc2.weight": "mlp.fc2.weight", "mlp.fc2.bias": "mlp.fc2.bias"}
_HF_CLIP_TOP = {"embeddings.class_embedding": "cls_token",
                "embeddings.patch_embedding.weight": "patch_embed.proj.weight",
                "embeddings.position_embedding.weight": "pos_embed", "embeddings.position_ids": DROP,
                "pre_layrnorm.weight": "ln_pre.weight", "pre_layrnorm.bias": "ln_pre.bias",
                "post_layernorm.weight": "ln_post.weight", "post_layernorm.bias": "ln_post.bias"}
_HF_CLIP_OTHER = ("text_model.", "text_projection.", "visual_projection.", "logit_scale")


def _is_hf_clip(state: dict, source: Source) -> bool:
    return any(re.match(r"^(vision_model\.)?embeddings\.class_embedding$", k) for k in state)


_QKV_NAMES = {"query": "q", "key": "k", "value": "v", "q_proj": "q", "k_proj": "k", "v_proj": "v"}


def _hf_rename(name: str, layer: str, qkv: str, block: dict, top: dict):
    """`_convert`'s rename for a Hugging Face layout: `layer` matches a block key (groups: index, rest),
    `qkv` a q/k/v projection inside it (groups: which, weight|bias); other block keys go through `block`,
    the rest through `top`."""
    m = re.match(layer, name)
    if not m:
        return top.get(name)
    i, rest = int(m.group(1)), m.group(2)
    part = re.fullmatch(qkv, rest)
    if part:
        return ("qkv", i, _QKV_NAMES.get(part.group(1), part.group(1)), part.group(2))
    new = block.get(rest)
    return f"blocks.{i}.{new}" if new else None


def _convert_hf_clip(state: dict, source: Source) -> Converted:
    def rename(k: str):
        if k.startswith(_HF_CLIP_OTHER):
            return DROP
        name = k[len("vision_model."):] if k.startswith("vision_model.") else k
        return _hf_rename(name, r"^encoder\.layers\.(\d+)\.(.+)$", r"self_attn\.([qkv])_proj\.(weight|bias)",
                          _HF_CLIP_BLOCK, _HF_CLIP_TOP)

    out = _convert("hf-clip", "clip", state, rename)
    if any(k.startswith(_HF_CLIP_OTHER) for k in out.dropped):
        out.notes.append("text model and projections not used: features are post_layernorm of the class token")
    cfg = source.hf_config
    if cfg is not None and cfg.get("model_type") == "clip":
        cfg = cfg.get("vision_config") or {}
    return _finish(out, CLIPViTConfig, source, _hf_stated(cfg, source, default_eps=1e-5, default_act="quick_gelu"))


# ---- Hugging Face ViT ----------------------------------------------------------------------------
_HF_VIT_BLOCK = {  # transformers 4 (and what 5 saves) / transformers 5's in-memory names
    "attention.output.dense.weight": "attn.proj.weight", "attention.output.dense.bias": "attn.proj.bias",
    "intermediate.dense.weight": "mlp.fc1.weight", "intermediate.dense.bias": "mlp.fc1.bias",
    "output.dense.weight": "mlp.fc2.weight", "output.dense.bias": "mlp.fc2.bias",
    "attention.o_proj.weight": "attn.proj.weight", "attention.o_proj.bias": "attn.proj.bias",
    "mlp.fc1.weight": "mlp.fc1.weight", "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.weight": "mlp.fc2.weight", "mlp.fc2.bias": "mlp.fc2.bias",
    "layernorm_before.weight": "norm1.weight", "layernorm_before.bias": "norm1.bias",
    "layernorm_after.weight": "norm2.weight", "layernorm_after.bias": "norm2.bias",
}
_HF_VIT_TOP = {"embeddings.cls_token": "cls_token", "embeddings.position_embeddings": "pos_embed",
               "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
               "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
               "embeddings.mask_token": DROP, "layernorm.weight": "ln_post.weight", "layernorm.bias": "ln_post.bias",
               "pooler.dense.weight": DROP, "pooler.dense.bias": DROP,
               "classifier.weight": "head.weight", "classifier.bias": "head.bias"}


def _is_hf_vit(state: dict, source: Source) -> bool:
    return any(re.match(r"^(vit\.)?embeddings\.cls_token$", k) for k in state)


def _convert_hf_vit(state: dict, source: Source) -> Converted:
    def rename(k: str):
        name = k[len("vit."):] if k.startswith("vit.") else k
        return _hf_rename(name, r"^(?:encoder\.layer|layers)\.(\d+)\.(.+)$",
                          r"attention\.(?:attention\.)?(query|key|value|[qkv]_proj)\.(weight|bias)",
                          _HF_VIT_BLOCK, _HF_VIT_TOP)

    out = _convert("hf-vit", "vit", state, rename)
    if any("pooler." in k for k in out.dropped):
        out.notes.append("pooler (dense + tanh) not used: features are layernorm of the class token")
    cfg = source.hf_config
    if cfg is not None and cfg.get("model_type", "vit") != "vit":
        raise CheckpointError(f"{source.path}/config.json: model_type is {cfg.get('model_type')!r}, expected 'vit'")
    out = _finish(out, SupViTConfig, source, _hf_stated(cfg, source, default_eps=1e-12, default_act="gelu"))
    if cfg is not None:
        names = _class_names(cfg)
        out.class_names = names if "head.weight" in out.state else None
    return out


def _hf_stated(cfg: dict | None, source: Source, default_eps: float, default_act: str) -> dict:
    """Config fields a Hugging Face config.json (and preprocessor_config.json) states; without one
    (a bare state dict file) the transformers defaults are assumed."""
    if cfg is None:
        return {"norm_eps": default_eps, "act": default_act}
    act = cfg.get("hidden_act", default_act)
    if act not in ("gelu", "quick_gelu"):
        raise CheckpointError(f"{source.path}/config.json: hidden_act {act!r} is not supported (gelu, quick_gelu)")
    stated = {"num_heads": int(cfg.get("num_attention_heads", 12)), "norm_eps": float(cfg.get("layer_norm_eps",
              default_eps)), "act": act}
    pre = Path(source.path) / "preprocessor_config.json"
    if pre.is_file():
        p = json.loads(pre.read_text())
        if p.get("image_mean") and p.get("image_std"):
            stated.update(mean=tuple(float(v) for v in p["image_mean"]), std=tuple(float(v) for v in p["image_std"]))
    return stated


def _class_names(cfg: dict) -> list[str] | None:
    id2label = cfg.get("id2label") or {}
    names = [id2label[k] for k in sorted(id2label, key=int)]
    return None if not names or all(n == f"LABEL_{i}" for i, n in enumerate(names)) else names


# ---- timm, aptune --------------------------------------------------------------------------------
def _is_timm(state: dict, source: Source) -> bool:
    w = state.get("patch_embed.proj.weight")
    return "cls_token" in state and w is not None and w.ndim == 4 and "ln_post.weight" not in state


def _convert_timm(state: dict, source: Source) -> Converted:
    def rename(k: str):
        if k in ("cls_token", "pos_embed") or k.startswith(("patch_embed.proj.", "head.")):
            return k
        if k.startswith("norm."):
            return "ln_post." + k[len("norm."):]
        if k.startswith("pre_logits."):
            return DROP
        m = re.match(r"^blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)$", k)
        return k if m else None

    out = _convert("timm-vit", "vit", state, rename)
    if any(k.startswith("fc_norm.") for k in out.unknown):
        out.notes.append("fc_norm: this timm ViT pools by averaging (global_pool='avg'); aptune's image ViT pools "
                         "the class token")
    if out.dropped:                        # the in21k representation layer sits between norm and head
        out.notes.append("pre_logits (the in21k representation layer) not used; the head is skipped with it")
        out.skipped += [k for k in out.state if k.startswith("head.")]
        out.state = {k: v for k, v in out.state.items() if not k.startswith("head.")}
    return _finish(out, SupViTConfig, source)


def _is_aptune(state: dict, source: Source) -> bool:
    return "cls_token" in state and "ln_post.weight" in state


def _convert_aptune(state: dict, source: Source) -> Converted:
    clip = "ln_pre.weight" in state
    out = _convert("aptune-image-vit", "clip" if clip else "vit", state, lambda k: k)
    return _finish(out, CLIPViTConfig if clip else SupViTConfig, source)


register_format("hf-clip", "Hugging Face CLIPVisionModel / CLIPModel ([vision_model.]embeddings.class_embedding, "
                "encoder.layers.{i}.self_attn.{q,k,v,out}_proj; text model ignored)", _is_hf_clip, _convert_hf_clip,
                priority=14)
register_format("hf-vit", "Hugging Face ViTModel / ViTForImageClassification ([vit.]embeddings.cls_token, "
                "encoder.layer.{i}.attention.attention.{query,key,value}; transformers 4 or 5 names)",
                _is_hf_vit, _convert_hf_vit, priority=15)
register_format("openai-clip", "OpenAI CLIP or open_clip state dict, or OpenAI's TorchScript archive ([visual.]conv1, "
                "class_embedding, transformer.resblocks.{i}.attn.in_proj_weight, ln_post; text tower ignored)",
                _is_openai, _convert_openai, priority=16)
register_format("timm-vit", "timm VisionTransformer state dict (cls_token, pos_embed, blocks.{i}.attn.qkv, norm, head)",
                _is_timm, _convert_timm, priority=35)
register_format("aptune-image-vit", "aptune's own image ViT state dict (cls_token, ln_pre, blocks.*, ln_post, head)",
                _is_aptune, _convert_aptune, priority=36)
