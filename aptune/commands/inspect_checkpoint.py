"""`aptune inspect-checkpoint PATH`: what a checkpoint, training snapshot or adapter folder holds.

    weights file / HF folder   the detected format (by its keys), config hints and tensor counts
    adapter folder             method, backbone family, what trains, the backbone and clip it recorded
    training snapshot          (runs/x/checkpoints/step_*.pt) the run's model and method, its position
                               (epoch, step), best validation top-1 and what its model state holds
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..adapters import META, WEIGHTS, read_adapter_meta, recorded_backbone
from ..engine.state import is_training_snapshot
from ..errors import CheckpointError
from ..hub import resolve
from ..models.checkpoints import describe_checkpoint, read_state

HELP = "show what a checkpoint, training snapshot (step_*.pt) or adapter folder holds"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="checkpoint file (.pth/.pt/.bin/.safetensors), Hugging Face folder, "
                                     "training snapshot (step_*.pt), adapter folder, or a Hugging Face Hub id "
                                     "(org/name[@revision], fetched into its cache)")
    parser.add_argument("--json", action="store_true", help="print the description as JSON")


def describe_adapter(path: Path) -> dict:
    meta = read_adapter_meta(path)
    state = read_state(path / WEIGHTS)
    rec = meta.get("backbone_weights") or {}
    return {"kind": "adapter", "method": meta["method"], "method_config": meta["method_config"],
            "family": meta["family"], "tensors": len(state),
            "parameters": sum(t.numel() for t in state.values()),
            "classes": meta["backbone"].get("num_classes"), "class_names": meta.get("class_names"),
            "backbone_weights": rec or None,
            "backbone_found": recorded_backbone(meta) if rec.get("path") else None,
            "clip": meta.get("clip"), "version": meta.get("version", 1)}


def describe_snapshot(payload: dict) -> dict:
    cfg = payload.get("config") or {}
    state = payload["model"]
    return {"kind": "training snapshot", "model": (cfg.get("model") or {}).get("name"),
            "method": (cfg.get("method") or {}).get("name"), "epoch": payload.get("epoch"),
            "step_in_epoch": payload.get("step_in_epoch"), "global_step": payload.get("global_step"),
            "best_val_top1": payload.get("best"), "world_size": payload.get("world_size"),
            "tensors": len(state), "parameters": sum(t.numel() for t in state.values()),
            "optimizer_groups": len((payload.get("optimizer") or {}).get("param_groups", []))}


def describe(path: str) -> dict:
    p = Path(resolve(path))                     # a Hub id: its cached snapshot folder
    if p.is_dir() and (p / META).exists():
        return describe_adapter(p)
    if p.name in (META, WEIGHTS) and (p.parent / META).is_file():
        raise CheckpointError(f"{p} is part of an adapter folder: pass the folder {p.parent}")
    raw = read_state(p) if p.is_file() else None
    if is_training_snapshot(raw):
        return describe_snapshot(raw)
    return {"kind": "weights", **describe_checkpoint(p, raw)}


def _show(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return f"{value:g}" if isinstance(value, float) else str(value)


def run(args: argparse.Namespace) -> int:
    info = describe(args.path)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"path:        {args.path}")
    if info["kind"] != "weights":
        for key, value in info.items():
            print(f"{key + ':':13s}{_show(value)}")
        return 0
    print(f"format:      {info['format']}  ({info['description']})")
    print(f"family:      {info['family']}")
    print(f"tensors:     {info['tensors']} used, {info['dropped']} dropped; {info['parameters']:,} parameters")
    hints = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in info["hints"].items())
    print(f"hints:       {hints or '-'}")
    shown = {"kind", "format", "description", "family", "tensors", "dropped", "parameters", "unknown", "hints",
             "notes"}
    for key, value in info.items():              # what the format adds (e.g. apt: its prompt layout)
        if key not in shown:
            print(f"{key + ':':13s}{_show(value)}")
    for note in info["notes"]:
        print(f"note:        {note}")
    return 0
