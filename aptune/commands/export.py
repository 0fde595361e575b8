"""`aptune export ADAPTER_DIR --format onnx|torch|hf --out PATH`: the trained model, backbone + method
+ head, as a file other tools run (aptune/export/).

    --format onnx    one ONNX file, every method; input "video" (batch, 3, T, S, S), output "logits"
    --format torch   a torch.export program (.pt2), every method; torch.export.load(PATH).module()(video)
    --format hf      a transformers VideoMAEForVideoClassification folder (from_pretrained, pipeline):
                     linear probing, full fine-tuning, LoRA (merged); other methods are refused with the reason

Each export is checked against aptune's own logits (onnxruntime, torch.export.load, transformers)
before its files are put in place; class names and the clip's normalisation go into the files.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..adapters import load_adapter
from ..errors import ConfigError
from ..export import FORMATS, export_model
from ..factory import count_parameters

HELP = "export a trained adapter with its backbone to ONNX, a torch.export program or a transformers folder"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("adapter", metavar="ADAPTER_DIR", help="adapter folder saved by `aptune train`")
    p.add_argument("--format", required=True, choices=list(FORMATS),
                   help="; ".join(f"{k}: {v}" for k, v in FORMATS.items()))
    p.add_argument("--out", required=True, metavar="PATH", help="the file to write (onnx, torch) or the folder (hf)")
    p.add_argument("--checkpoint", metavar="FILE",
                   help="backbone weights (default: the file the adapter records it was trained on)")
    p.add_argument("--random-backbone", action="store_true",
                   help="export on a random backbone (the adapter's recorded seed if it was trained on one)")
    p.add_argument("--allow-other-backbone", action="store_true",
                   help="accept backbone weights whose fingerprint differs from the recorded one")
    p.add_argument("--opset", type=int, metavar="N", help="ONNX opset version (default: torch's exporter's)")


def run(args: argparse.Namespace) -> int:
    if args.opset is not None and args.format != "onnx":
        raise ConfigError(f"--opset applies to --format onnx, not {args.format}")
    model = load_adapter(args.adapter, checkpoint=args.checkpoint, allow_random_backbone=args.random_backbone,
                         allow_other_backbone=args.allow_other_backbone)
    c = model.config
    print(f"exporting {args.adapter}: method {model.tuning.name}, {model.family} backbone "
          f"({count_parameters(model)['total']:,} parameters), clips {c.num_frames}x{c.img_size}x{c.img_size}, "
          f"{c.num_classes} classes -> {args.out} ({FORMATS[args.format]})", flush=True)
    t0 = time.monotonic()
    result = export_model(model, args.format, args.out, opset=args.opset)
    print(f"  took {time.monotonic() - t0:.1f} s (tracing, writing and the check)")
    for note in result.notes:
        print(f"  {note}")
    for path in result.paths:
        print(f"wrote {path} ({_size(path)})")
    print(f"checked: {result.check}")
    return 0


def _size(path: Path) -> str:
    n = path.stat().st_size
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"
