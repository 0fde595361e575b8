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
import sys
from pathlib import Path

from ..data.prepare import VIDEO_EXTENSIONS as VIDEO_EXT
from ..errors import MissingFileError

HELP = "predict the top classes of videos (files, or every video in folders) with a trained adapter"
EPILOG = ("exit status: 0 when every video was predicted; 1 when some could not be decoded (each has one line "
          "with its reason, the others their answers); 2 for a bad option, adapter or path")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    p.add_argument("paths", nargs="+", metavar="PATH", help="video files and/or folders of videos")
    p.add_argument("--adapter", required=True, action="append", metavar="[TASK=]DIR",
                   help="adapter folder saved by `aptune train`; repeat as TASK=DIR to run several tasks on one "
                        "backbone in one pass")
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


def _views(config, paths: list[Path], clips: int, crops: int, clip: dict):
    """The test views of each video, decoded once: a dataset whose item i is ((V, 3, T, S, S), label)."""
    from ..data.datasets import VideoDataset
    norm = {k: tuple(clip[k]) for k in ("mean", "std") if clip.get(k)}
    return VideoDataset([(str(p), 0) for p in paths], mode="test", num_frames=clip["num_frames"] or config.num_frames,
                        sampling_rate=clip["sampling_rate"], img_size=clip["img_size"] or config.img_size,
                        sampling=clip["sampling"], num_clips=clips, num_crops=crops, skip_bad_videos=True, **norm)


def _top(probs, names, top: int) -> list:
    val, idx = probs.topk(min(top, probs.numel()))
    return [(names[j], float(v)) for v, j in zip(val.tolist(), idx.tolist())]


def _decoded(ds, paths: list[Path]):
    """(path, views (V, 3, T, S, S) or None, reason or None) per video: a bad one does not stop the rest."""
    from ..data.datasets import BadVideo
    for i, p in enumerate(paths):
        item = ds[i]
        if isinstance(item, BadVideo):
            yield p, None, item.reason
        else:
            yield p, item[0], None


def predict_videos(model, paths: list[Path], clips: int, crops: int, clip: dict, top: int = 5):
    """Yields {"video", "top": [(class_name, probability), ...]} per video, softmax averaged over clips x
    crops views; {"video", "error"} for a video that cannot be decoded."""
    import torch

    from ..engine.evaluate import average_views
    ds = _views(model.config, paths, clips, crops, clip)
    names = getattr(model, "class_names", None) or [str(i) for i in range(model.config.num_classes)]
    model.eval()
    with torch.no_grad():
        for p, views, reason in _decoded(ds, paths):
            yield ({"video": str(p), "error": reason} if views is None else
                   {"video": str(p), "top": _top(average_views(model(views)), names, top)})


def predict_tasks(mt, paths: list[Path], clips: int, crops: int, clip: dict, top: int = 5):
    """Yields {"video", "task", "top"} for every video and task of the MultiTaskModel `mt` ({"video",
    "error"} once for a video that cannot be decoded): each video is decoded once, and the views of all
    tasks go through the backbone as one mixed batch."""
    import torch

    from ..engine.evaluate import average_views
    ds = _views(mt.backbone.config, paths, clips, crops, clip)
    tasks = mt.tasks
    with torch.no_grad():
        for p, views, reason in _decoded(ds, paths):
            if views is None:
                yield {"video": str(p), "error": reason}
                continue
            V = views.shape[0]
            logits = mt(views.repeat(len(tasks), 1, 1, 1, 1), [t for t in tasks for _ in range(V)])
            for k, t in enumerate(tasks):
                task = mt.task(t)
                names = task.class_names or [str(j) for j in range(task.num_classes)]
                probs = average_views(torch.stack(logits[k * V:(k + 1) * V]))
                yield {"video": str(p), "task": t, "top": _top(probs, names, top)}


def parse_adapters(values: list[str]) -> dict[str, str] | None:
    """{task: folder} for TASK=DIR values; None for one plain DIR (the single-adapter command)."""
    from ..errors import ConfigError
    if len(values) == 1 and ("=" not in values[0] or Path(values[0]).exists()):
        return None
    out = {}
    for v in values:
        name, sep, directory = v.partition("=")
        if not sep or not name or not directory:
            raise ConfigError(f"--adapter {v!r}: with several adapters each must be TASK=DIR")
        if name in out:
            raise ConfigError(f"--adapter: task {name!r} given twice ({out[name]} and {directory})")
        out[name] = directory
    return out


def find_videos(path: str | list[str]) -> list[Path]:
    """The videos to predict: each path a file, or a folder searched for video files (sorted); a path
    that is neither is an error before any work."""
    out = []
    for src in map(Path, [path] if isinstance(path, str) else path):
        if src.is_dir():
            found = sorted(p for p in src.rglob("*") if p.suffix.lower() in VIDEO_EXT and p.is_file())
            if not found:
                raise MissingFileError(f"no videos ({', '.join(VIDEO_EXT)}) in {src}")
            out += found
        elif src.is_file():
            out.append(src)
        else:
            raise MissingFileError(f"video not found: {src}")
    return out


def run(args: argparse.Namespace) -> int:
    from ..adapters import load_adapter
    from ..console import warn
    from ..errors import ConfigError
    paths = find_videos(args.paths)
    asked = {"num_frames": args.num_frames, "img_size": args.img_size, "sampling": args.sampling,
             "sampling_rate": args.sampling_rate}
    tasks = parse_adapters(args.adapter)
    if tasks is None:
        source = args.adapter[0]
        model = load_adapter(source, checkpoint=args.checkpoint, allow_random_backbone=args.random_backbone,
                             allow_other_backbone=args.allow_other_backbone)
        recorded = model.adapter_meta.get("clip")
    else:
        from ..multitask import load_adapters
        if args.random_backbone:
            raise ConfigError("--random-backbone works with one adapter; several tasks share a real backbone")
        model = load_adapters(tasks, checkpoint=args.checkpoint, allow_other_backbone=args.allow_other_backbone)
        source, recorded = ", ".join(tasks.values()), model.task(model.tasks[0]).clip
        _warn_sampling(model)
    clip, warnings = clip_settings(recorded, asked)
    for w in warnings:
        warn(f"{source}: {w}")
    unnamed = ([source] if not getattr(model, "class_names", None) else []) if tasks is None else \
        [tasks[t] for t in model.tasks if not model.task(t).class_names]
    for folder in unnamed:
        warn(f"{folder}: the adapter records no class names (its training list had no classes.txt beside it): "
             "classes are shown by number")
    results = (predict_videos(model, paths, args.clips, args.crops, clip, args.top) if tasks is None else
               predict_tasks(model, paths, args.clips, args.crops, clip, args.top))
    failed = _print_results(results, args.json)
    if failed:
        print(f"aptune: error: {failed} of {len(paths)} videos could not be decoded (each named above)",
              file=sys.stderr)
        return 1
    return 0


def _print_results(results, as_json: bool) -> int:
    """Print each result as it comes (text or JSON Lines); returns how many videos failed."""
    import json
    last, failed = None, 0
    for r in results:
        failed += "error" in r
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
    return failed


def _warn_sampling(mt) -> None:
    """One decode serves every task: say so when the tasks were trained with other frame sampling."""
    from ..console import warn
    first = mt.task(mt.tasks[0])
    for t in mt.tasks[1:]:
        other = mt.task(t)
        for key in ("sampling", "sampling_rate"):
            a, b = first.clip.get(key), other.clip.get(key)
            if a is not None and b is not None and a != b:
                warn(f"task {t!r} was trained with {key}={b}, task {first.name!r} with {key}={a}: "
                     f"every task sees the clips of {first.name!r}")
