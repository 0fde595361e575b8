"""`aptune predict VIDEO_OR_FOLDER --adapter DIR`: top classes with probabilities per video.

The clip shape (frames, size, sampling, stride) and normalisation default to what the adapter
recorded when it was trained; the backbone defaults to the file it recorded. Asking for another
clip shape works, with a warning.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..data.prepare import VIDEO_EXTENSIONS as VIDEO_EXT
from ..errors import MissingFileError

HELP = "predict the top classes of a video (or every video in a folder) with a trained adapter"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a video file or a folder of videos")
    p.add_argument("--adapter", required=True, metavar="DIR", help="adapter folder saved by `aptune train`")
    p.add_argument("--checkpoint", metavar="FILE",
                   help="backbone weights (default: the file the adapter records it was trained on)")
    p.add_argument("--random-backbone", action="store_true",
                   help="run without the backbone weights on a random init (the adapter's recorded seed if it was "
                        "trained on one; otherwise the answers mean nothing)")
    p.add_argument("--allow-other-backbone", action="store_true",
                   help="accept weights whose fingerprint differs from the recorded one")
    p.add_argument("--top", type=int, default=5, help="how many classes to print")
    p.add_argument("--clips", type=int, default=2, help="temporal clips per video")
    p.add_argument("--crops", type=int, default=3, help="spatial crops per clip")
    p.add_argument("--num-frames", type=int, help="frames per clip (default: the adapter's)")
    p.add_argument("--img-size", type=int, help="clip height = width (default: the adapter's)")
    p.add_argument("--sampling-rate", type=int, help="frame stride of dense clips (default: the adapter's, else 4)")
    p.add_argument("--sampling", choices=["dense", "segment"], help="clip sampling (default: the adapter's)")
    p.add_argument("--json", action="store_true", help="print one JSON object per video instead of text")


def clip_settings(recorded: dict | None, asked: dict) -> tuple[dict, list[str]]:
    """The clip to use: the adapter's recorded clip, with what was asked for on top; and a warning for
    every asked value that differs from the recorded one."""
    rec = dict(recorded or {})
    out = {k: rec.get(k) for k in ("num_frames", "img_size", "sampling", "sampling_rate", "mean", "std")}
    warnings = []
    for k, v in asked.items():
        if v is None:
            continue
        if rec.get(k) is not None and rec[k] != v:
            warnings.append(f"{k} {v} differs from the adapter's {rec[k]} (it was trained at that)")
        out[k] = v
    out["sampling"] = out["sampling"] or "dense"
    out["sampling_rate"] = out["sampling_rate"] or 4
    return out, warnings


def predict_videos(model, paths: list[Path], clips: int, crops: int, clip: dict, top: int = 5) -> list[dict]:
    """[{"video", "top": [(class_name, probability), ...]}] with softmax averaged over clips x crops views."""
    import torch

    from ..data.datasets import VideoDataset
    from ..engine.evaluate import average_views
    c = model.config
    norm = {k: tuple(clip[k]) for k in ("mean", "std") if clip.get(k)}
    ds = VideoDataset([(str(p), 0) for p in paths], mode="test", num_frames=clip["num_frames"] or c.num_frames,
                      sampling_rate=clip["sampling_rate"], img_size=clip["img_size"] or c.img_size,
                      sampling=clip["sampling"], num_clips=clips, num_crops=crops, **norm)
    names = getattr(model, "class_names", None) or [str(i) for i in range(c.num_classes)]
    model.eval()
    out = []
    with torch.no_grad():
        for i, p in enumerate(paths):
            views = ds[i][0]                                   # (V, 3, T, S, S)
            probs = average_views(model(views))                # (C,)
            val, idx = probs.topk(min(top, probs.numel()))
            out.append({"video": str(p), "top": [(names[j], float(v)) for v, j in zip(val.tolist(), idx.tolist())]})
    return out


def find_videos(path: str) -> list[Path]:
    src = Path(path)
    if src.is_dir():
        paths = sorted(p for p in src.rglob("*") if p.suffix.lower() in VIDEO_EXT)
        if not paths:
            raise MissingFileError(f"no videos ({', '.join(VIDEO_EXT)}) in {src}")
        return paths
    if src.is_file():
        return [src]
    raise MissingFileError(f"video not found: {src}")


def run(args: argparse.Namespace) -> int:
    import json

    from ..adapters import load_adapter
    from ..console import warn
    paths = find_videos(args.path)
    model = load_adapter(args.adapter, checkpoint=args.checkpoint, allow_random_backbone=args.random_backbone,
                         allow_other_backbone=args.allow_other_backbone)
    clip, warnings = clip_settings(model.adapter_meta.get("clip"), {
        "num_frames": args.num_frames, "img_size": args.img_size, "sampling": args.sampling,
        "sampling_rate": args.sampling_rate})
    for w in warnings:
        warn(f"{args.adapter}: {w}")
    for r in predict_videos(model, paths, args.clips, args.crops, clip, args.top):
        if args.json:
            print(json.dumps(r))
        else:
            print(r["video"])
            for name, p in r["top"]:
                print(f"  {p:7.2%}  {name}")
    return 0
