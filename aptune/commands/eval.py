"""`aptune eval CONFIG (--adapter DIR | --checkpoint FILE)`: the multi-view test protocol.

Videos that cannot be decoded are left out (never replaced), each named once with its list
file:line and reason; their count and list are in metrics.json ("skipped_videos", "bad_videos").

With an adapter, the clip shape (frames, size, sampling, stride) and normalisation are the ones it
was trained with, and the backbone is `--backbone`, else `model.checkpoint`, else the file the
adapter records; a different clip shape is used only when given as a dotted override (with a warning).
"""
from __future__ import annotations

import argparse
import os

from ..config import apply_override
from ..engine.evaluate import summary
from ..workflows import evaluate

HELP = "evaluate with the multi-view protocol (clips x crops, softmax averaged per video)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config naming the data (data.test_list) and model")
    p.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE",
                   help="dotted overrides, e.g. data.test_clips=2 (accepted anywhere on the line)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--adapter", metavar="DIR", help="adapter folder saved by training (adapter.json + safetensors)")
    src.add_argument("--checkpoint", metavar="FILE",
                     help="a training checkpoint (run/checkpoints/step_*.pt) or full model weights (a file, Hugging "
                          "Face folder or Hub id org/name[@revision])")
    p.add_argument("--backbone", metavar="FILE",
                   help="backbone weights under the adapter (default: model.checkpoint, else the adapter's record)")
    p.add_argument("--random-backbone", action="store_true",
                   help="evaluate the adapter on a random backbone (its recorded seed if it was trained on one)")
    p.add_argument("--allow-other-backbone", action="store_true",
                   help="accept backbone weights whose fingerprint differs from the adapter's record")
    p.add_argument("--split", choices=["test", "val"], default="test", help="which list to evaluate")
    p.add_argument("--out", metavar="DIR", help="where to write metrics.json and confusion.png "
                                                "(default: <output.dir>/eval)")
    p.add_argument("--batch-size", type=int, default=1, help="videos per batch (each has clips x crops views)")


def run(args: argparse.Namespace) -> int:
    overrides: dict = {}
    for item in args.overrides:                       # section.key=value, parsed as YAML as in every command
        apply_override(overrides, item)
    ev = evaluate(args.config, adapter=args.adapter, checkpoint=args.checkpoint, backbone=args.backbone,
                  split=args.split, out=args.out, batch_size=args.batch_size, random_backbone=args.random_backbone,
                  allow_other_backbone=args.allow_other_backbone, **overrides)
    if os.environ.get("RANK", "0") == "0":
        m = ev.metrics
        print(summary(m))
        if m.get("skipped_videos"):
            print(f"left out {m['skipped_videos']} of {ev.listed} videos that could not be decoded "
                  "(named above; listed in metrics.json under bad_videos)")
        print(f"wrote {ev.out_dir / 'metrics.json'} and {ev.out_dir / 'confusion.png'}")
    return 0
