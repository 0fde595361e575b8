"""`aptune predict VIDEO_OR_FOLDER --adapter DIR`: top classes with probabilities per video."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..data.prepare import VIDEO_EXTENSIONS as VIDEO_EXT
from ..errors import MissingFileError

HELP = "predict the top classes of a video (or every video in a folder) with a trained adapter"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="a video file or a folder of videos")
    p.add_argument("--adapter", required=True, metavar="DIR", help="adapter folder saved by `aptune train`")
    p.add_argument("--checkpoint", metavar="FILE", help="backbone weights the adapter was trained on")
    p.add_argument("--top", type=int, default=5, help="how many classes to print")
    p.add_argument("--clips", type=int, default=2, help="temporal clips per video")
    p.add_argument("--crops", type=int, default=3, help="spatial crops per clip")
    p.add_argument("--sampling-rate", type=int, default=4, help="frame stride of dense clips")
    p.add_argument("--sampling", choices=["dense", "segment"], default="dense", help="clip sampling")
    p.add_argument("--json", action="store_true", help="print one JSON object per video instead of text")


def predict_videos(model, paths: list[Path], clips: int, crops: int, sampling_rate: int = 4,
                   sampling: str = "dense", top: int = 5) -> list[dict]:
    """[{"video", "top": [(class_name, probability), ...]}] with softmax averaged over clips x crops views."""
    import torch

    from ..data.datasets import VideoDataset
    from ..engine.evaluate import average_views
    c = model.config
    ds = VideoDataset([(str(p), 0) for p in paths], mode="test", num_frames=c.num_frames, sampling_rate=sampling_rate,
                      img_size=c.img_size, sampling=sampling, num_clips=clips, num_crops=crops, mean=c.mean, std=c.std)
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


def run(args: argparse.Namespace) -> int:
    import json

    from ..api import load_adapter
    src = Path(args.path)
    if src.is_dir():
        paths = sorted(p for p in src.rglob("*") if p.suffix.lower() in VIDEO_EXT)
        if not paths:
            raise MissingFileError(f"no videos ({', '.join(VIDEO_EXT)}) in {src}")
    elif src.is_file():
        paths = [src]
    else:
        raise MissingFileError(f"video not found: {src}")
    model = load_adapter(args.adapter, checkpoint=args.checkpoint)
    for r in predict_videos(model, paths, args.clips, args.crops, args.sampling_rate, args.sampling, args.top):
        if args.json:
            print(json.dumps(r))
        else:
            print(r["video"])
            for name, p in r["top"]:
                print(f"  {p:7.2%}  {name}")
    return 0
