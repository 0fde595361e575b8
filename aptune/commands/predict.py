"""`aptune predict VIDEO_OR_FOLDER... --adapter DIR`: top classes with probabilities per video.

Every good video gets its answer; a video that cannot be decoded gets one line with its reason (in
--json: {"video", "error"}) and the command then exits 1.

The clip shape (frames, size, sampling, stride) and normalisation default to what the adapter
recorded when it was trained; the backbone defaults to the file it recorded. Asking for another
clip shape works, with a warning.

Several tasks at once: `--adapter ucf101=runs/ucf101/adapter --adapter hmdb51=runs/hmdb51/adapter`
loads one backbone with every adapter on it (aptune.multitask), decodes each video once and runs
all tasks' views in one mixed batch; it prints the top classes per task.
"""
from __future__ import annotations

import argparse
import json
import sys

from ..prediction import parse_adapters
from ..workflows import iter_predict

HELP = "predict the top classes of videos (files, or every video in folders) with a trained adapter"
EPILOG = ("exit status: 0 when every video was predicted; 1 when some could not be decoded (each has one line "
          "with its reason, the others their answers); 2 for a bad option, adapter or path")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    p.add_argument("paths", nargs="+", metavar="PATH", help="video files and/or folders of videos")
    p.add_argument("--adapter", required=True, action="append", metavar="[TASK=]DIR",
                   help="adapter folder saved by `aptune train` (or an adapter's Hub id org/name); repeat as "
                        "TASK=DIR to run several tasks on one backbone in one pass")
    p.add_argument("--checkpoint", metavar="FILE",
                   help="backbone weights: a file, folder or Hub id (default: the one the adapter records it was "
                        "trained on)")
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


def run(args: argparse.Namespace) -> int:
    tasks = parse_adapters(args.adapter)
    results = iter_predict(args.paths, adapter=tasks or args.adapter[0], checkpoint=args.checkpoint,
                           clips=args.clips, crops=args.crops, top=args.top, num_frames=args.num_frames,
                           img_size=args.img_size, sampling=args.sampling, sampling_rate=args.sampling_rate,
                           random_backbone=args.random_backbone, allow_other_backbone=args.allow_other_backbone)
    failed, total = _print_results((p.as_dict() for p in results), args.json)
    if failed:
        print(f"aptune: error: {failed} of {total} videos could not be decoded (each named above)", file=sys.stderr)
        return 1
    return 0


def _print_results(results, as_json: bool) -> tuple[int, int]:
    """Print each result as it comes (text or JSON Lines); returns (videos that failed, videos)."""
    last, failed, videos = None, 0, set()
    for r in results:
        failed += "error" in r
        videos.add(r["video"])
        if as_json:
            print(json.dumps(r), flush=True)
            continue
        if "error" in r:
            print(f"{r['video']}: could not be decoded: {r['error']}", flush=True)
            continue
        if r["video"] != last:
            print(r["video"])
            last = r["video"]
        if "task" in r:
            print(f"  [{r['task']}]")
        for name, p in r["top"]:
            print(f"  {p:7.2%}  {name}", flush=True)
    return failed, len(videos)


