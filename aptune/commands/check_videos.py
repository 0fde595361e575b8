"""`aptune check-videos LIST [--config CFG]`: decode every listed video and report the bad ones.

"Too short" is `aptune.data.sampling.min_frames`, the rule the dataset's sampler uses: a
video with fewer frames is still loaded (padded by repeating frames, as the APT authors'
loader does), but its clips repeat frames, so it is reported.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import load_config
from ..console import progress
from ..data.decode import check_video
from ..data.prepare import read_list_file
from ..data.sampling import min_frames
from ..errors import DataError, MissingFileError

HELP = ("decode every video of a list file; report missing, empty, truncated, undecodable and "
        "too-short files (exit 1 if any)")
PROBLEMS = ("missing", "empty", "truncated", "undecodable", "too_short")
CLIP_DEFAULTS = {"num_frames": 16, "sampling_rate": 4, "sampling": "dense"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("list", help="list file (`relative/path label` per line)")
    parser.add_argument("--root", default=None, help="folder the list paths are relative to "
                        "(default: data.root of --config, else the paths as written)")
    parser.add_argument("--config", default=None, metavar="CFG",
                        help="run config: take num_frames, sampling_rate, sampling and root from "
                             "its data section (the flags below override it)")
    parser.add_argument("--num-frames", type=int, default=None,
                        help=f"frames per clip (default {CLIP_DEFAULTS['num_frames']})")
    parser.add_argument("--sampling-rate", type=int, default=None,
                        help=f"stride of dense clips (default {CLIP_DEFAULTS['sampling_rate']})")
    parser.add_argument("--sampling", choices=["dense", "segment"], default=None,
                        help="dense clips need (num_frames-1)*rate+1 frames, segments num_frames "
                             "(default dense)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def clip_shape(args: argparse.Namespace) -> tuple[dict, str | None]:
    """({num_frames, sampling_rate, sampling}, root): flags first, then the --config file's
    data section, then the defaults."""
    shape, root = dict(CLIP_DEFAULTS), args.root
    if args.config:
        d = load_config(args.config).data
        shape = {k: getattr(d, k) for k in CLIP_DEFAULTS}
        root = root or d.root
    for k in CLIP_DEFAULTS:
        if getattr(args, k) is not None:
            shape[k] = getattr(args, k)
    return shape, root


def run(args: argparse.Namespace) -> int:
    if not Path(args.list).exists():
        raise MissingFileError(f"list file {args.list} not found")
    shape, root = clip_shape(args)
    entries = read_list_file(args.list)
    if not entries:
        raise DataError(f"list file {args.list} is empty: no 'relative/path label' lines, nothing to check")
    need = min_frames(shape["num_frames"], shape["sampling_rate"], shape["sampling"])
    bad = {k: [] for k in PROBLEMS}
    for rel, _ in progress(entries, desc="check-videos", unit="video", show=not args.no_progress):
        path = str(Path(root) / rel) if root else rel
        problem, detail = check_video(path, need)
        if problem:
            bad[problem].append({"path": path, "detail": detail})
    n_bad = sum(len(v) for v in bad.values())
    if args.json:
        print(json.dumps({"total": len(entries), "ok": len(entries) - n_bad, "bad": n_bad,
                          "min_frames": need, "clip": shape, "problems": bad}, indent=2))
    else:
        for kind in PROBLEMS:
            for item in bad[kind]:
                print(f"{kind:11s} {item['path']}: {item['detail']}")
        counts = ", ".join(f"{len(v)} {k}" for k, v in bad.items() if v)
        print(f"{len(entries)} videos: {len(entries) - n_bad} ok, {n_bad} bad"
              + (f" ({counts})" if counts else "") + f"; clips need {need} frames "
              f"({shape['sampling']} {shape['num_frames']}x{shape['sampling_rate']}; shorter "
              "videos are padded by repeating frames)")
    return 1 if n_bad else 0
