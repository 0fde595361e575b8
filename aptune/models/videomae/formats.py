"""Checkpoint formats of the VideoMAE family, recognised by their keys (registered in
`checkpoints.py`'s registry on import). Each turns a flat state dict into aptune's names
(`patch_embed.proj.weight`, `blocks.{i}.attn.qkv.weight`, `blocks.{i}.attn.q_bias`, ..., `fc_norm.*`,
`head.*`), lists the keys deliberately left out (decoders, final norms) and those nobody understood.

    hf-videomae        `[videomae.]encoder.layer.{i}.attention.attention.{query,key,value}` ...
    videomae-pretrain  `encoder.blocks.{i}.*`, `encoder.patch_embed.*` (+ decoder, dropped)
    videomae-finetune  native names, saved by the official code (DeepSpeed `module`, or `model`)
    aptune             native names, no wrapper (aptune's own `model.state_dict()`)

LayerNorm eps: a Hugging Face folder states its own (`layer_norm_eps`, default 1e-12 in blocks, and
1e-5 in the classifier's fc_norm). Its logits depend on it, so loading such a folder sets the model's
LayerNorm eps (and `model.config.norm_eps` / `fc_norm_eps`, which adapters record) to the folder's
values, with a note in the report. Other formats keep the model's eps (official VideoMAE/APT: 1e-6).
"""
from __future__ import annotations

import re

import torch

from ...errors import CheckpointError
from ..checkpoints import Converted, Source, register_format
from .model import VideoMAEConfig

# fields that decide whether tensors fit; the others (frames, size, classes, eps) may differ
STRUCTURE_FIELDS = ("embed_dim", "depth", "num_heads", "mlp_ratio", "patch_size", "tubelet_size", "in_chans",
                    "qkv_bias")


def infer_hints(state: dict[str, torch.Tensor]) -> dict:
    """What converted tensors say about the VideoMAE model they came from (for messages and inspection)."""
    hints: dict = {}
    w = state.get("patch_embed.proj.weight")
    if w is not None and w.ndim == 5:                              # (C, in, t, p, p)
        hints.update(embed_dim=w.shape[0], in_chans=w.shape[1], tubelet_size=w.shape[2], patch_size=w.shape[3])
    backbone_blocks = {int(m.group(1)) for k in state if (m := re.match(r"^blocks\.(\d+)\.(attn\.qkv|mlp)\.", k))}
    if backbone_blocks:
        hints["depth"] = max(backbone_blocks) + 1
    fc1 = state.get("blocks.0.mlp.fc1.weight")
    if fc1 is not None:
        hints["mlp_ratio"] = fc1.shape[0] / fc1.shape[1]
    if backbone_blocks:
        hints["qkv_bias"] = "blocks.0.attn.q_bias" in state
    pk = next((v for k, v in state.items() if k.endswith(".kv_prompts.key")), None)   # (m, head_dim)
    if pk is not None and "embed_dim" in hints:
        hints["num_heads"] = hints["embed_dim"] // pk.shape[-1]
    head = state.get("head.weight")
    if head is not None:
        hints["num_classes"] = head.shape[0]
    if "pos_embed" in state:
        hints["pos_embed_tokens"] = state["pos_embed"].shape[-2]
    return hints


def stated_grid(state: dict, args) -> tuple[int, int, int] | None:
    """The token grid a file was trained on, from the official code's `args` (num_frames,
    input_size), with tubelet and patch sizes taken from the patch embedding."""
    w = state.get("patch_embed.proj.weight")                       # (C, in, t, p, p)
    frames, size = getattr(args, "num_frames", None), getattr(args, "input_size", None)
    if w is None or w.ndim != 5 or not isinstance(frames, int) or not isinstance(size, int):
        return None
    return frames // w.shape[2], size // w.shape[3], size // w.shape[4]


def _finish(out: Converted, source: Source) -> Converted:
    out.hints = infer_hints(out.state)
    if out.source_grid is None:
        out.source_grid = stated_grid(out.state, source.extras.get("args"))
    return out


# ---- native names (official fine-tuned, aptune) --------------------------------------------------
_NATIVE = re.compile(r"^(patch_embed\.proj\.(weight|bias)|pos_embed|fc_norm\.(weight|bias)|head\.(weight|bias)"
                     r"|blocks\.\d+\..+)$")


def add_native(key: str, value: torch.Tensor, out: Converted) -> None:
    """Keep a native key, drop the encoder's final norm, flag anything else as unknown."""
    if _NATIVE.match(key):
        out.state[key] = value
    elif key.startswith("norm."):
        out.dropped.append(key)
    else:
        out.unknown.append(key)


def convert_native(state: dict, source: Source, fmt: str | None = None) -> Converted:
    out = Converted(fmt or ("videomae-finetune" if source.wrapper else "aptune"), {})
    for k, v in state.items():
        add_native(k, v, out)
    if any(k.startswith("norm.") for k in out.dropped):
        out.notes.append("final encoder norm (norm.*) not used: aptune mean-pools the tokens, then fc_norm")
    return _finish(out, source)


def _is_native(state: dict, source: Source) -> bool:
    return any(re.match(r"^blocks\.\d+\.attn\.qkv\.", k) for k in state) or "patch_embed.proj.weight" in state


# ---- official VideoMAE pre-training --------------------------------------------------------------
_PRETRAIN_DROP = ("decoder.", "encoder_to_decoder.", "mask_token", "encoder.norm.", "pos_embed", "decoder_pos_embed")


def _convert_pretrain(state: dict, source: Source) -> Converted:
    out = Converted("videomae-pretrain", {})
    for k, v in state.items():
        if k.startswith(_PRETRAIN_DROP):
            out.dropped.append(k)
        elif k.startswith("encoder."):
            add_native(k[len("encoder."):], v, out)
        else:
            out.unknown.append(k)
    out.notes.append("pre-training checkpoint: decoder and the encoder's final norm dropped; fc_norm and head "
                     "start fresh")
    return _finish(out, source)


# ---- Hugging Face VideoMAE -----------------------------------------------------------------------
_HF_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")
_HF_RENAME = {  # inside encoder.layer.{i}.
    "attention.attention.q_bias": "attn.q_bias",            # transformers 4
    "attention.attention.v_bias": "attn.v_bias",
    "attention.attention.query.bias": "attn.q_bias",        # transformers 5
    "attention.attention.value.bias": "attn.v_bias",
    "attention.output.dense.weight": "attn.proj.weight",
    "attention.output.dense.bias": "attn.proj.bias",
    "layernorm_before.weight": "norm1.weight",
    "layernorm_before.bias": "norm1.bias",
    "layernorm_after.weight": "norm2.weight",
    "layernorm_after.bias": "norm2.bias",
    "intermediate.dense.weight": "mlp.fc1.weight",
    "intermediate.dense.bias": "mlp.fc1.bias",
    "output.dense.weight": "mlp.fc2.weight",
    "output.dense.bias": "mlp.fc2.bias",
}
_HF_TOP = {
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "fc_norm.weight": "fc_norm.weight", "fc_norm.bias": "fc_norm.bias",
    "classifier.weight": "head.weight", "classifier.bias": "head.bias",
}
_HF_DROP = ("decoder.", "encoder_to_decoder.", "mask_token", "position_embeddings", "embeddings.position_embeddings")


def config_from_hf_dict(cfg: dict, source: str = "config.json") -> VideoMAEConfig:
    """A VideoMAEConfig from a Hugging Face VideoMAEConfig dict (the contents of config.json).

    norm_eps takes `layer_norm_eps` (HF default 1e-12) and fc_norm_eps is 1e-5: the classifier's
    fc_norm in transformers is a LayerNorm with torch's default eps.
    """
    if cfg.get("model_type", "videomae") != "videomae":
        raise CheckpointError(f"{source}: model_type is {cfg.get('model_type')!r}, expected 'videomae'")

    def one(field_name, default):
        v = cfg.get(field_name, default)
        if isinstance(v, (list, tuple)):
            if len(set(v)) != 1:
                raise CheckpointError(f"{source}: {field_name}={v} is not square; aptune needs equal sizes")
            v = v[0]
        return int(v)

    hidden = int(cfg.get("hidden_size", 768))
    archs = cfg.get("architectures") or []
    classifier = any("VideoClassification" in a for a in archs)
    num_labels = len(cfg["id2label"]) if cfg.get("id2label") else int(cfg.get("num_labels", 0))
    return VideoMAEConfig(
        embed_dim=hidden,
        depth=int(cfg.get("num_hidden_layers", 12)),
        num_heads=int(cfg.get("num_attention_heads", 12)),
        mlp_ratio=int(cfg.get("intermediate_size", 4 * hidden)) / hidden,
        patch_size=one("patch_size", 16),
        tubelet_size=int(cfg.get("tubelet_size", 2)),
        in_chans=int(cfg.get("num_channels", 3)),
        num_frames=int(cfg.get("num_frames", 16)),
        img_size=one("image_size", 224),
        qkv_bias=bool(cfg.get("qv_bias", cfg.get("qkv_bias", True))),
        norm_eps=float(cfg.get("layer_norm_eps", 1e-12)),
        fc_norm_eps=1e-5,
        num_classes=num_labels if classifier else 0,
    )


def hf_class_names(cfg: dict) -> list[str] | None:
    """Class names from id2label, unless they are transformers' placeholders (LABEL_0, ...)."""
    id2label = cfg.get("id2label") or {}
    names = [id2label[k] for k in sorted(id2label, key=int)]
    if not names or all(n == f"LABEL_{i}" for i, n in enumerate(names)):
        return None
    return names


def _is_hf(state: dict, source: Source) -> bool:
    return any(re.match(r"^(videomae\.)?encoder\.layer\.\d+\.attention\.attention\.", k) for k in state)


def _convert_hf(state: dict, source: Source) -> Converted:
    out = Converted("hf-videomae", {})
    qkv: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in state.items():
        name = k[len("videomae."):] if k.startswith("videomae.") else k
        m = _HF_LAYER.match(name)
        if m:
            i, rest = int(m.group(1)), m.group(2)
            part = re.fullmatch(r"attention\.attention\.(query|key|value)\.weight", rest)
            if part:
                qkv.setdefault(i, {})[part.group(1)] = v
            elif rest in _HF_RENAME:
                out.state[f"blocks.{i}.{_HF_RENAME[rest]}"] = v
            else:
                out.unknown.append(k)
        elif name in _HF_TOP:
            out.state[_HF_TOP[name]] = v
        elif name.startswith("layernorm."):
            out.dropped.append(k)
            out.notes.append("final encoder LayerNorm (videomae.layernorm, use_mean_pooling=False) not used: "
                             "aptune mean-pools the tokens, then fc_norm")
        elif name.startswith(_HF_DROP):
            out.dropped.append(k)
        else:
            out.unknown.append(k)
    for i, parts in sorted(qkv.items()):
        if set(parts) != {"query", "key", "value"}:
            raise CheckpointError(f"hf-videomae: layer {i} has {sorted(parts)} projection weights; "
                                  "need query, key and value")
        out.state[f"blocks.{i}.attn.qkv.weight"] = torch.cat([parts["query"], parts["key"], parts["value"]])
    if any(k.startswith("decoder.") for k in out.dropped):
        out.notes.append("pre-training checkpoint: decoder dropped; fc_norm and head start fresh")
    if source.hf_config is not None:
        _apply_hf_config(out, source)
    return _finish(out, source)


def _apply_hf_config(out: Converted, source: Source) -> None:
    """What config.json decides: the model's structure (checked), LayerNorm eps (set after loading),
    class names, the grid of the position table and, without mean pooling, an unused head."""
    cfg = source.hf_config
    where = f"{source.path}/config.json"
    hf = config_from_hf_dict(cfg, where)
    out.config, out.class_names, out.source_grid = hf, hf_class_names(cfg), hf.grid()
    if not cfg.get("use_mean_pooling", True):
        for k in [k for k in out.state if k.startswith(("head.", "fc_norm."))]:
            del out.state[k]
            out.skipped.append(k)
            out.notes.append(f"{k} skipped: use_mean_pooling=False, HF classifies the first token")

    def check(model, src: str) -> None:
        for f in STRUCTURE_FIELDS:
            a, b = getattr(model.config, f), getattr(hf, f)
            if a != b:
                raise CheckpointError(f"{src}: VideoMAEConfig.{f} is {a} in the model but {b} in the checkpoint's "
                                      f"config.json; build the model from it (create_model('{src}'))")

    def finish(model, report: dict) -> None:
        c = model.config
        if (c.norm_eps, c.fc_norm_eps) != (hf.norm_eps, hf.fc_norm_eps):
            report["notes"].append(f"LayerNorm eps set from config.json: blocks {hf.norm_eps:g} "
                                   f"(model had {c.norm_eps:g}), fc_norm {hf.fc_norm_eps:g}")
            model.set_norm_eps(hf.norm_eps, hf.fc_norm_eps)

    out.check, out.finish = check, finish


def _is_pretrain(state: dict, source: Source) -> bool:
    return any(k.startswith(("encoder.blocks.", "encoder.patch_embed.")) for k in state)


register_format("hf-videomae", "Hugging Face VideoMAEForVideoClassification / VideoMAEModel / VideoMAEForPreTraining "
                "(config.json + model.safetensors or pytorch_model.bin; transformers 4 or 5 key names)",
                _is_hf, _convert_hf, priority=20)
register_format("videomae-pretrain", "official VideoMAE pre-training checkpoint (model: encoder.* + decoder.*)",
                _is_pretrain, _convert_pretrain, priority=30)
register_format("videomae-finetune", "official VideoMAE fine-tuned checkpoint (DeepSpeed module, or model / "
                "state_dict wrapper; blocks.*, fc_norm.*, head.*)",
                lambda s, src: src.wrapper is not None and _is_native(s, src),
                lambda s, src: convert_native(s, src, "videomae-finetune"), priority=40)
register_format("aptune", "aptune's own state dict (model.state_dict())",
                lambda s, src: src.wrapper is None and _is_native(s, src),
                lambda s, src: convert_native(s, src, "aptune"), priority=41)
