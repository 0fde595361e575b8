"""`aptune transcode SRC [SRC ...] --out DIR`: re-encode a dataset for fast training reads."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..console import warn
from ..data.transcode import plan, transcode, write_lists
from ..errors import ConfigError
from ..io import atomic_path

HELP = ("re-encode videos (a folder, or the videos of list files) to a short side of 320 px with a keyframe "
        "every 16 frames, in parallel; list files are rewritten to the new files, bad videos reported and left out")

EPILOG = """Why: the training loader's CPU time is decoding, which grows with the pixels per frame and
with the frames between a seek's keyframe and the clip (Kinetics-like 720p files with a keyframe every
250 frames load 4.3x slower per core than after this command: benchmarks/README.md).

  aptune transcode data/k400/train.csv data/k400/val.csv --root data/k400/videos --out data/k400_320
  aptune train CFG data.root=data/k400_320 data.train_list=data/k400_320/train.csv ...

Outputs: DIR/<path of the source>.mp4 (H.264, frame count and timestamps of the source kept, upright,
no audio); for list files DIR/<list name> with the paths rewritten (bad videos left out) and the
list's classes.txt; bad videos listed in DIR/transcode_errors.txt. A second run skips outputs
already there (each is written whole, then renamed). Exit status 1 when some videos were bad."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("sources", nargs="+", metavar="SRC", help="a folder of videos, or list files")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--root", default=None, help="folder the list paths are relative to (default: as written)")
    parser.add_argument("--short-side", type=int, default=320,
                        help="short side in pixels, never enlarged (default: 320)")
    parser.add_argument("--keyframe-interval", type=int, default=16,
                        help="frames from one keyframe to the next (default: 16)")
    parser.add_argument("--crf", type=int, default=23, help="x264 quality, lower: better and larger (default: 23)")
    parser.add_argument("--workers", type=int, default=0, help="processes (default: one per CPU core)")
    parser.add_argument("--overwrite", action="store_true", help="re-encode outputs that exist already")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    for name in ("short_side", "keyframe_interval", "crf"):
        if getattr(args, name) < (0 if name == "crf" else 1):
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    p = plan(args.sources, args.out, args.root)
    there = 0 if args.overwrite else sum(Path(d).is_file() for _, d in p.jobs)
    workers = args.workers or len(os.sched_getaffinity(0))
    print(f"aptune: transcoding {len(p.jobs) - there} videos ({there} already in {args.out}) to H.264, short side "
          f"{args.short_side}, a keyframe every {args.keyframe_interval} frames, crf {args.crf}, {workers} workers")
    failed = transcode(p.jobs, workers=workers, show_progress=not args.no_progress, overwrite=args.overwrite,
                       short_side=args.short_side, keyframe_interval=args.keyframe_interval, crf=args.crf)
    bad = [f"{p.where[d]}: {src}: {failed[d]}" for src, d in p.jobs if failed.get(d)]
    for line in bad[:20]:
        warn(f"bad video, left out: {line}")
    if bad:
        with atomic_path(Path(args.out) / "transcode_errors.txt") as tmp:
            tmp.write_text("".join(line + "\n" for line in bad))
    for path, n in write_lists(p, failed).items():
        print(f"aptune: {path}: {n} videos")
    print(f"aptune: {len(p.jobs) - len(bad)} of {len(p.jobs)} videos in {args.out}"
          + (f"; {len(bad)} bad, left out (listed in {Path(args.out) / 'transcode_errors.txt'})" if bad else ""))
    return 1 if bad else 0
