"""The model card (README.md) of an adapter folder, rendered from its adapter.json alone.

Hugging Face Hub metadata first (YAML front matter: library_name, base_model when the backbone is a
Hub id, tags, pipeline_tag), then what a reader needs to trust and reuse the adapter: the backbone
(id or file, commit, fingerprint), the method and its options, the clip, the data, the metrics (test
top-1 with its 95% bootstrap interval over test videos), the command that trained it, and how to load it.
"""
from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import yaml

from .io import atomic_path
from .stats import bootstrap_ci

CARD = "README.md"


def write_card(directory: str | os.PathLike, meta: dict) -> Path:
    """Write directory/README.md for the adapter described by `meta` (its adapter.json, as
    `adapters.read_adapter_meta` gives it: "family" filled in for version 1 files)."""
    path = Path(directory) / CARD
    with atomic_path(path) as tmp:
        tmp.write_text(render_card(meta))
    return path


def invocation() -> str:
    """The command line of this process, as a person would type it (`aptune train ...`)."""
    if Path(sys.argv[0]).name in ("aptune", "__main__.py"):
        return shlex.join(["aptune", *sys.argv[1:]])
    return shlex.join([Path(sys.executable).name, *sys.argv])


def test_summary(test: dict) -> dict:
    """The multi-view test metrics a card shows, top-1 with its 95% bootstrap interval over test videos."""
    out = {k: test[k] for k in ("video_top1", "video_top5", "clip_top1", "num_videos", "num_views") if k in test}
    if test.get("video_correct"):
        out["video_top1_ci"] = list(bootstrap_ci(test["video_correct"]))
    return out


def render_card(meta: dict) -> str:
    rec = meta.get("backbone_weights") or {}
    hub = rec.get("hub") or {}
    front = {"library_name": "aptune", "pipeline_tag": "video-classification",
             "tags": ["aptune", "video-classification", "action-recognition", meta["method"], "peft"]}
    if hub:
        front["base_model"] = hub["id"]
    names = meta.get("class_names") or []
    title = f"# {meta['method']} adapter on {_backbone_name(meta)} ({meta['backbone'].get('num_classes')} classes)"
    parts = ["---\n" + yaml.safe_dump(front, sort_keys=False) + "---", title,
             _section_backbone(meta, rec, hub), _section_method(meta), _section_clip(meta.get("clip") or {}),
             _section_data(meta.get("training") or {}, names), _section_metrics(meta),
             _section_training(meta), _section_use(meta, hub)]
    return "\n\n".join(p for p in parts if p) + "\n"


def _backbone_name(meta: dict) -> str:
    rec = meta.get("backbone_weights") or {}
    if meta.get("backbone_weights") is None:
        return f"a fully fine-tuned {meta['family']} model"
    if rec.get("hub"):
        return rec["hub"]["id"]
    if rec.get("path"):
        return Path(rec["path"]).name
    return f"a random {meta['family']} backbone (seed {rec.get('random_seed')})"


def _section_backbone(meta: dict, rec: dict, hub: dict) -> str:
    b = meta["backbone"]
    lines = ["## Backbone", "",
             f"- family: {meta['family']}; width {b.get('embed_dim')}, {b.get('depth')} blocks, "
             f"{b.get('num_heads')} heads, patch {b.get('patch_size')}"]
    if meta.get("backbone_weights") is None:
        lines.append("- every weight trained: the adapter file holds the whole model; no backbone is needed")
        return "\n".join(lines)
    if hub:
        lines.append(f"- weights: Hugging Face Hub `{hub['id']}` (revision `{hub.get('revision')}`, "
                     f"commit `{hub.get('commit')}`)")
    elif rec.get("path"):
        size = f", {rec['size'] / 1e6:.1f} MB" if rec.get("size") else ""
        lines.append(f"- weights: `{rec['path']}`{size}")
    else:
        lines.append(f"- weights: a random init (seed {rec.get('random_seed')}): for tests and demos only")
    lines.append(f"- fingerprint: `{rec.get('fingerprint')}` (sha256 over the frozen tensors; loading refuses "
                 "other weights)")
    return "\n".join(lines)


def _section_method(meta: dict) -> str:
    p = meta.get("parameters") or {}
    rows = [f"| {k} | {json.dumps(v)} |" for k, v in meta["method_config"].items()]
    count = ""
    if p.get("trainable"):
        count = (f"\n\nTrainable parameters: {p['trainable']:,} of {p['total']:,} "
                 f"({100 * p['trainable'] / max(p['total'], 1):.3f}%)")
    return f"## Method: {meta['method']}\n\n| option | value |\n|---|---|\n" + "\n".join(rows) + count


def _section_clip(clip: dict) -> str:
    if not clip:
        return ""
    return ("## Input clip\n\n"
            f"{clip.get('num_frames')} frames of {clip.get('img_size')} x {clip.get('img_size')}, sampling "
            f"{clip.get('sampling') or '-'} (stride {clip.get('sampling_rate') or '-'}), normalised with mean "
            f"{clip.get('mean')} and std {clip.get('std')}")


def _section_data(training: dict, names: list) -> str:
    data = training.get("data") or {}
    lines = ["## Data", ""]
    for key in ("train_list", "val_list", "test_list", "root"):
        if data.get(key):
            lines.append(f"- {key}: `{data[key]}`")
    if data.get("num_train_videos"):
        lines.append(f"- training videos: {data['num_train_videos']:,}")
    if names:
        shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
        lines.append(f"- classes: {shown}")
    return "\n".join(lines) if len(lines) > 2 else ""


def _section_metrics(meta: dict) -> str:
    lines = []
    test = meta.get("test") or {}
    if test.get("video_top1") is not None:
        ci = test.get("video_top1_ci")
        interval = f" [95% CI {ci[0]:.1f}, {ci[1]:.1f}]" if ci else ""
        lines.append(f"| test (multi-view, {test.get('num_videos')} videos, {test.get('num_views')} views) | "
                     f"{test['video_top1']:.2f}{interval} | {test.get('video_top5', float('nan')):.2f} |")
    val = meta.get("val") or {}
    if val.get("top1") is not None:
        lines.append(f"| validation (one clip per video, last epoch) | {val['top1']:.2f} | "
                     f"{val.get('top5', float('nan')):.2f} |")
    if meta.get("best_val_top1") is not None and not val:
        lines.append(f"| best validation (one clip per video) | {meta['best_val_top1']:.2f} | - |")
    if not lines:
        return "## Metrics\n\nNot evaluated when this card was written."
    note = ("\n\nThe interval is a percentile bootstrap over test videos (2,000 resamples)."
            if test.get("video_top1_ci") else "")
    return "## Metrics\n\n| split | top-1 (%) | top-5 (%) |\n|---|---:|---:|\n" + "\n".join(lines) + note


def _section_training(meta: dict) -> str:
    training = meta.get("training") or {}
    if not training.get("command") and not training.get("config"):
        return ""
    out = "## Training"
    if training.get("command"):
        out += f"\n\n```bash\n{training['command']}\n```"
    if meta.get("global_step") is not None:
        out += f"\n\n{meta['global_step']:,} optimizer steps."
    if training.get("config"):
        out += ("\n\n<details><summary>resolved configuration</summary>\n\n```yaml\n"
                + yaml.safe_dump(training["config"], sort_keys=False) + "```\n\n</details>")
    return out


def _section_use(meta: dict, hub: dict) -> str:
    where = "REPO_ID_OR_FOLDER"
    backbone = "" if hub or meta.get("backbone_weights") is None else ', checkpoint="BACKBONE_FILE"'
    return ("## Use\n\n```python\nimport aptune\n"
            f'model = aptune.from_pretrained("{where}"{backbone})   # backbone + this adapter\n'
            "logits = model(video)                  # video: (B, 3, T, H, W), normalised as above\n```\n\n"
            f"or `aptune predict clip.mp4 --adapter {where}`.")
