"""Prediction on video files: the model from one adapter (or several, sharing one backbone), the clip
it was trained with, and the top classes per video, streamed one video at a time so that a bad video
costs only its own answer. `aptune.predict` (workflows.py) and `aptune predict` use it.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .adapters import load_adapter
from .console import warn
from .data.datasets import BadVideo, VideoDataset
from .data.prepare import VIDEO_EXTENSIONS as VIDEO_EXT
from .data.prepare import videos_in
from .engine.evaluate import average_views
from .errors import ConfigError, MissingFileError
from .multitask import load_adapters


def load_predictor(adapter, checkpoint=None, random_backbone: bool = False, allow_other_backbone: bool = False,
                   asked: dict | None = None):
    """(model, tasks or None, clip settings) for `adapter`: one folder or Hub id (a plain model), or
    {task: folder} (a MultiTaskModel); the clip is the adapter's recorded one with `asked` on top, each
    differing value warned about, as are adapters without class names."""
    tasks = dict(adapter) if isinstance(adapter, dict) else None
    if tasks is None:
        source = str(adapter)
        model = load_adapter(adapter, checkpoint=checkpoint, allow_random_backbone=random_backbone,
                             allow_other_backbone=allow_other_backbone)
        recorded = model.adapter_meta.get("clip")
    else:
        if random_backbone:
            raise ConfigError("--random-backbone works with one adapter; several tasks share a real backbone")
        model = load_adapters(tasks, checkpoint=checkpoint, allow_other_backbone=allow_other_backbone)
        source, recorded = ", ".join(map(str, tasks.values())), model.task(model.tasks[0]).clip
        warn_sampling(model)
    clip, warnings = clip_settings(recorded, asked or {})
    for w in warnings:
        warn(f"{source}: {w}")
    unnamed = ([source] if not getattr(model, "class_names", None) else []) if tasks is None else \
        [tasks[t] for t in model.tasks if not model.task(t).class_names]
    for folder in unnamed:
        warn(f"{folder}: the adapter records no class names (its training list had no classes.txt beside it): "
             "classes are shown by number")
    return model, tasks, clip


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
    norm = {k: tuple(clip[k]) for k in ("mean", "std") if clip.get(k)}
    return VideoDataset([(str(p), 0) for p in paths], mode="test", num_frames=clip["num_frames"] or config.num_frames,
                        sampling_rate=clip["sampling_rate"], img_size=clip["img_size"] or config.img_size,
                        sampling=clip["sampling"], num_clips=clips, num_crops=crops, skip_bad_videos=True, **norm)


def _top(probs, names, top: int) -> list:
    val, idx = probs.topk(min(top, probs.numel()))
    return [(names[j], float(v)) for v, j in zip(val.tolist(), idx.tolist())]


def _decoded(ds, paths: list[Path]):
    """(path, views (V, 3, T, S, S) or None, reason or None) per video: a bad one does not stop the rest."""
    for i, p in enumerate(paths):
        item = ds[i]
        if isinstance(item, BadVideo):
            yield p, None, item.reason
        else:
            yield p, item[0], None


def predict_videos(model, paths: list[Path], clips: int, crops: int, clip: dict, top: int = 5):
    """Yields {"video", "top": [(class_name, probability), ...]} per video, softmax averaged over clips x
    crops views; {"video", "error"} for a video that cannot be decoded."""
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
            found = videos_in(src)
            if not found:
                raise MissingFileError(f"no videos ({', '.join(VIDEO_EXT)}) in {src}")
            out += found
        elif src.is_file():
            out.append(src)
        else:
            raise MissingFileError(f"video not found: {src}")
    return out


def warn_sampling(mt) -> None:
    """One decode serves every task: say so when the tasks were trained with other frame sampling."""
    first = mt.task(mt.tasks[0])
    for t in mt.tasks[1:]:
        other = mt.task(t)
        for key in ("sampling", "sampling_rate"):
            a, b = first.clip.get(key), other.clip.get(key)
            if a is not None and b is not None and a != b:
                warn(f"task {t!r} was trained with {key}={b}, task {first.name!r} with {key}={a}: "
                     f"every task sees the clips of {first.name!r}")
