"""`aptune eval CONFIG (--adapter DIR | --checkpoint FILE)`: the multi-view test protocol."""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "evaluate with the multi-view protocol (clips x crops, softmax averaged per video)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config naming the data (data.test_list) and model")
    p.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE", help="dotted overrides, e.g. data.test_clips=2")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--adapter", metavar="DIR", help="adapter folder saved by training (adapter.json + safetensors)")
    src.add_argument("--checkpoint", metavar="FILE",
                     help="a training checkpoint (run/checkpoints/step_*.pt) or full model weights")
    p.add_argument("--backbone", metavar="FILE", help="backbone weights under the adapter (default: model.checkpoint)")
    p.add_argument("--split", choices=["test", "val"], default="test", help="which list to evaluate")
    p.add_argument("--out", metavar="DIR", help="where to write metrics.json and confusion.png "
                                                "(default: <output.dir>/eval)")
    p.add_argument("--batch-size", type=int, default=1, help="videos per batch (each has clips x crops views)")


def build_eval_model(cfg, adapter: str | None, checkpoint: str | None, backbone: str | None, num_classes: int):
    """The model to evaluate from an adapter folder, a training checkpoint, or plain weights."""
    import torch

    from ..api import create_model, load_adapter
    from ..engine.state import load_model_state
    from ..engine.train import build_model
    if adapter:
        return load_adapter(adapter, checkpoint=backbone or cfg.model.checkpoint)
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"--checkpoint: file not found: {checkpoint}")
    payload = torch.load(checkpoint, map_location="cpu", weights_only=False) if checkpoint.endswith(".pt") else None
    if isinstance(payload, dict) and "global_step" in payload and "model" in payload:
        model = build_model(cfg, num_classes)
        load_model_state(model, payload["model"])
        return model
    m = cfg.model
    return create_model(m.name, num_classes=num_classes, num_frames=cfg.data.num_frames, img_size=cfg.data.img_size,
                        checkpoint=checkpoint, method=cfg.method.name, **cfg.method.options)


def run(args: argparse.Namespace) -> int:
    import os

    from ..config import load_config
    from ..data.datasets import VideoDataset
    from ..engine import distributed as D
    from ..engine.evaluate import run_test_protocol, summary
    from ..engine.train import resolve_amp, resolve_device
    cfg = load_config(args.config, args.overrides)
    cfg.validate(world_size=int(os.environ.get("WORLD_SIZE", "1")), need_train=False)
    d = cfg.data
    lst = d.test_list if args.split == "test" else d.val_list
    if not lst:
        raise ValueError(f"data.{args.split}_list: not set in {args.config}")
    device = resolve_device(cfg.runtime, int(os.environ.get("LOCAL_RANK", "0")))
    with D.process_group(device.type) as info:
        ds = VideoDataset(lst, root=d.root, mode="test", num_frames=d.num_frames, sampling_rate=d.sampling_rate,
                          img_size=d.img_size, sampling=d.sampling, num_clips=d.test_clips, num_crops=d.test_crops,
                          skip_bad_videos=d.skip_bad_videos, short_side=d.short_side, seed=cfg.runtime.seed)
        model = build_eval_model(cfg, args.adapter, args.checkpoint, args.backbone,
                                 cfg.model.num_classes or ds.num_classes).to(device)
        names = getattr(model, "class_names", None) or getattr(ds, "class_names", None)
        out = Path(args.out or Path(cfg.output.dir) / "eval")
        m = run_test_protocol(model, ds, device, out, args.batch_size, d.num_workers,
                              resolve_amp(cfg.runtime, device), d.skip_bad_videos, names)
        if info.is_main:
            print(summary(m))
            if m.get("skipped_videos"):
                print(f"skipped {m['skipped_videos']} unreadable videos")
            print(f"wrote {out / 'metrics.json'} and {out / 'confusion.png'}")
    return 0
