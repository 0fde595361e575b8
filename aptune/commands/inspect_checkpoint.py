"""`aptune inspect-checkpoint PATH`: the detected format, config hints and key counts of a checkpoint."""
from __future__ import annotations

import argparse
import json

HELP = "show a checkpoint's detected format (by its keys), config hints and tensor counts"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="checkpoint file (.pth/.pt/.bin/.safetensors) or Hugging Face folder")
    parser.add_argument("--json", action="store_true", help="print the description as JSON")


def run(args: argparse.Namespace) -> int:
    from ..models.checkpoints import describe_checkpoint
    info = describe_checkpoint(args.path)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"path:        {args.path}")
    print(f"format:      {info['format']}  ({info['description']})")
    print(f"family:      {info['family']}")
    print(f"tensors:     {info['tensors']} used, {info['dropped']} dropped; {info['parameters']:,} parameters")
    hints = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in info["hints"].items())
    print(f"hints:       {hints or '-'}")
    shown = {"format", "description", "family", "tensors", "dropped", "parameters", "unknown", "hints", "notes"}
    for key, value in info.items():              # what the format adds (e.g. apt: its prompt layout)
        if key not in shown:
            text = ", ".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else value
            print(f"{key + ':':13s}{text}")
    for note in info["notes"]:
        print(f"note:        {note}")
    return 0
