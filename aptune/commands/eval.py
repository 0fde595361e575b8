"""`aptune eval CONFIG (--adapter DIR | --checkpoint FILE)`: the multi-view test protocol.

Videos that cannot be decoded are left out (never replaced), each named once with its list
file:line and reason; their count and list are in metrics.json ("skipped_videos", "bad_videos").

With an adapter, the clip shape (frames, size, sampling, stride) and normalisation are the ones it
was trained with, and the backbone is `--backbone`, else `model.checkpoint`, else the file the
adapter records; a different clip shape is used only when given as a dotted override (with a warning).
"""
from __future__ import annotations

import argparse
from pathlib import Path

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


def build_eval_model(cfg, args, num_classes: int | None):
    """The model to evaluate from an adapter folder, a training checkpoint, or plain weights."""
    from ..adapters import load_adapter
    from ..engine.build import build_model
    from ..engine.state import is_training_snapshot, load_model_state
    from ..errors import ConfigError, MissingFileError
    from ..hub import is_hub_id
    from ..models.checkpoints import load_checkpoint, read_checkpoint, read_state
    if args.adapter:
        return load_adapter(args.adapter, checkpoint=args.backbone or cfg.model.checkpoint,
                            allow_random_backbone=args.random_backbone, allow_other_backbone=args.allow_other_backbone)
    checkpoint = args.checkpoint
    if not Path(checkpoint).exists() and not is_hub_id(checkpoint):
        raise MissingFileError(f"--checkpoint: not found: {checkpoint}")
    if not num_classes:
        raise ConfigError("model.num_classes: not set and the list has no classes.txt beside it")
    raw = read_state(checkpoint)                         # the safe loader: no code from the file runs
    if is_training_snapshot(raw):
        model = build_model(cfg, num_classes)
        load_model_state(model, raw["model"])
        return model
    model = build_model(cfg, num_classes, checkpoint=None)
    model.checkpoint_report = load_checkpoint(model, checkpoint, conv=read_checkpoint(checkpoint, raw))
    return model


def run(args: argparse.Namespace) -> int:
    import os

    from ..adapters import read_adapter_meta
    from ..config import load_config
    from ..console import warn
    from ..engine import distributed as D
    from ..engine.build import build_dataset, use_adapter_clip
    from ..engine.evaluate import run_test_protocol, summary
    from ..engine.runtime import Runtime, resolve_device
    from ..errors import ConfigError
    cfg = load_config(args.config, args.overrides)
    meta = read_adapter_meta(args.adapter) if args.adapter else {}
    if meta:
        for w in use_adapter_clip(cfg, meta.get("clip"), {o.split("=", 1)[0].strip() for o in args.overrides}):
            warn(f"{args.adapter}: {w}")
    cfg.validate(world_size=int(os.environ.get("WORLD_SIZE", "1")), need_train=False, lists=(args.split,))
    ds = build_dataset(cfg, args.split, mode="test", norm=meta.get("clip"))
    if ds is None:
        raise ConfigError(f"data.{args.split}_list: not set in {args.config}")
    with D.process_group(resolve_device(cfg.runtime.device).type):
        rt = Runtime.create(cfg.runtime, cfg.data.num_workers)
        model = build_eval_model(cfg, args, cfg.model.num_classes or ds.num_classes).to(rt.device)
        ds.check_labels(model.num_classes)
        names = getattr(model, "class_names", None) or getattr(ds, "class_names", None)
        out = Path(args.out or Path(cfg.output.dir) / "eval")
        m = run_test_protocol(model, ds, rt, out, args.batch_size, names)
        if rt.is_main:
            print(summary(m))
            if m.get("skipped_videos"):
                print(f"left out {m['skipped_videos']} of {len(ds)} videos that could not be decoded "
                      "(named above; listed in metrics.json under bad_videos)")
            print(f"wrote {out / 'metrics.json'} and {out / 'confusion.png'}")
    return 0
