"""What the command line does, as Python calls returning dataclasses; `aptune train`, `eval` and
`predict` call these.

    result = aptune.train("configs/ucf101/vit_b_apt200.yaml", **{"model.checkpoint": "MCG-NJU/videomae-base"})
    result.adapter_dir, result.test["video_top1"]
    ev = aptune.evaluate("cfg.yaml", adapter=result.adapter_dir)          # EvalResult: ev.top1, ev.metrics
    for p in aptune.predict(["a.mp4", "clips/"], adapter="runs/x/adapter"):
        print(p.video, p.top[0] if p.ok else p.error)

A config is a YAML path, a `Config` or a dict of sections; overrides are keyword arguments with dotted
keys (`**{"optim.lr": 0.05}`), `section__key=value` (`optim__lr=0.05`) or whole sections
(`optim={"lr": 0.05}`), applied as the command line's `section.key=value` are.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .adapters import load_adapter, read_adapter_meta
from .config import SECTIONS, Config, load_config
from .console import warn
from .engine import distributed as D
from .engine.build import build_dataset, build_model, use_adapter_clip
from .engine.evaluate import run_test_protocol
from .engine.runtime import Runtime, resolve_device
from .engine.state import is_training_snapshot, load_model_state
from .engine.train import train as run_training
from .errors import ConfigError, MissingFileError
from .hub import is_hub_id
from .models.checkpoints import load_checkpoint, read_checkpoint, read_state
from .prediction import find_videos, load_predictor, predict_tasks, predict_videos


@dataclass
class TrainResult:
    run_dir: Path
    adapter_dir: Path
    val: dict | None                 # the last clip-level validation (top1, top5, loss)
    test: dict | None                # the multi-view test metrics (video_top1, ...), if a test list was set
    best_val_top1: float
    global_step: int
    model: Any = field(repr=False, default=None)


@dataclass
class EvalResult:
    metrics: dict                    # everything metrics.json holds
    out_dir: Path
    listed: int = 0                  # videos in the list (metrics count the ones that could be decoded)

    @property
    def top1(self) -> float:
        return self.metrics["video_top1"]

    @property
    def top5(self) -> float:
        return self.metrics["video_top5"]


@dataclass
class Prediction:
    video: str
    top: list[tuple[str, float]] = field(default_factory=list)    # (class name, probability), best first
    task: str | None = None          # with several adapters: which task this answer is for
    error: str | None = None         # why the video could not be decoded (then `top` is empty)

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict:
        """The JSON record `aptune predict --json` prints."""
        out = {"video": self.video}
        if self.task is not None:
            out["task"] = self.task
        out.update({"error": self.error} if self.error is not None else {"top": self.top})
        return out


def make_config(config_or_path, overrides: dict | None = None) -> Config:
    """A Config from a YAML path, a Config or a dict of sections, with keyword-style overrides."""
    if isinstance(config_or_path, Config):
        d, source = config_or_path.to_dict(), config_or_path.source
    elif isinstance(config_or_path, dict):
        d, source = {k: dict(v) if isinstance(v, dict) else v for k, v in config_or_path.items()}, "<dict>"
    else:
        d, source = load_config(config_or_path).to_dict(), os.fspath(config_or_path)
    for key, value in (overrides or {}).items():
        if key in SECTIONS and isinstance(value, dict):
            d.setdefault(key, {}).update(value)
            continue
        parts = key.replace("__", ".").split(".")
        if len(parts) != 2 or parts[0] not in SECTIONS:
            raise ConfigError(f"override {key!r}: expected section.key (or section__key), e.g. optim.lr; sections: "
                              f"{', '.join(SECTIONS)}")
        d.setdefault(parts[0], {})[parts[1]] = value
    return Config.from_dict(d, source=source)


def train(config_or_path, *, resume: bool | str = False, datasets: dict | None = None, **overrides) -> TrainResult:
    """Fine-tune as `aptune train` does (see engine/train.py): resume True continues the newest checkpoint
    in output.dir, "auto" continues one if there is one; `datasets` ({"train", "val", "test"}) replaces
    the list files (data already in memory)."""
    out = run_training(make_config(config_or_path, overrides), datasets=datasets, resume=resume)
    return TrainResult(Path(out["run_dir"]), Path(out["adapter_dir"]), out["val"], out["test"], out["best_top1"],
                       out["global_step"], out["model"])


def evaluate(config_or_path, *, adapter=None, checkpoint=None, backbone=None, split: str = "test",
             out: str | os.PathLike | None = None, batch_size: int = 1, random_backbone: bool = False,
             allow_other_backbone: bool = False, **overrides) -> EvalResult:
    """The multi-view test protocol on data.<split>_list, as `aptune eval` runs it: the model from
    `adapter` (a folder or Hub id, on `backbone`, else model.checkpoint, else the backbone it records)
    or from `checkpoint` (a training snapshot or full weights). With an adapter, the clip is the one it
    was trained with unless an override names another (with a warning). Writes metrics.json and
    confusion.png into `out` (default <output.dir>/eval)."""
    if bool(adapter) == bool(checkpoint):
        raise ConfigError("evaluate: give exactly one of adapter= (an adapter folder or Hub id) and checkpoint=")
    cfg = make_config(config_or_path, overrides)
    meta = read_adapter_meta(adapter) if adapter else {}
    if meta:
        asked = {k.replace("__", ".") for k in overrides} | {f"{s}.{k}" for s, v in overrides.items()
                                                             if isinstance(v, dict) for k in v}
        for w in use_adapter_clip(cfg, meta.get("clip"), asked):
            warn(f"{adapter}: {w}")
    cfg.validate(world_size=int(os.environ.get("WORLD_SIZE", "1")), need_train=False, lists=(split,))
    ds = build_dataset(cfg, split, mode="test", norm=meta.get("clip"))
    if ds is None:
        raise ConfigError(f"data.{split}_list: not set in {cfg.source}")
    with D.process_group(resolve_device(cfg.runtime.device).type):
        rt = Runtime.create(cfg.runtime, cfg.data.num_workers)
        model = eval_model(cfg, cfg.model.num_classes or ds.num_classes, adapter, checkpoint, backbone,
                           random_backbone, allow_other_backbone).to(rt.device)
        ds.check_labels(model.num_classes)
        names = getattr(model, "class_names", None) or getattr(ds, "class_names", None)
        out_dir = Path(out or Path(cfg.output.dir) / "eval")
        m = run_test_protocol(model, ds, rt, out_dir, batch_size, names)
    return EvalResult(m, out_dir, len(ds))


def eval_model(cfg: Config, num_classes: int | None, adapter=None, checkpoint=None, backbone=None,
               random_backbone: bool = False, allow_other_backbone: bool = False):
    """The model to evaluate from an adapter (folder or Hub id), a training snapshot, or plain weights."""
    if adapter:
        return load_adapter(adapter, checkpoint=backbone or cfg.model.checkpoint,
                            allow_random_backbone=random_backbone, allow_other_backbone=allow_other_backbone)
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


def iter_predict(videos, adapter, checkpoint=None, clips: int = 2, crops: int = 3, top: int = 5,
                 num_frames: int | None = None, img_size: int | None = None, sampling: str | None = None,
                 sampling_rate: int | None = None, random_backbone: bool = False,
                 allow_other_backbone: bool = False):
    """`predict`, one Prediction at a time as each video is done (what `aptune predict` prints from)."""
    paths = find_videos([os.fspath(v) for v in videos] if isinstance(videos, (list, tuple)) else os.fspath(videos))
    asked = {"num_frames": num_frames, "img_size": img_size, "sampling": sampling, "sampling_rate": sampling_rate}
    model, tasks, clip = load_predictor(adapter, checkpoint, random_backbone, allow_other_backbone, asked)
    run = predict_videos if tasks is None else predict_tasks
    for r in run(model, paths, clips, crops, clip, top):
        yield Prediction(r["video"], [tuple(t) for t in r.get("top", [])], r.get("task"), r.get("error"))


def predict(videos, adapter, checkpoint=None, **options) -> list[Prediction]:
    """Top classes of each video (a file, a folder of videos, or a list of both) with `adapter` (a folder
    or Hub id; or {task: folder} for several tasks on one backbone), softmax averaged over clips x crops
    views, as `aptune predict` does. A video that cannot be decoded gets a Prediction with `error` set.
    `options`: clips, crops, top, num_frames, img_size, sampling, sampling_rate (default: the adapter's
    clip), random_backbone, allow_other_backbone."""
    return list(iter_predict(videos, adapter, checkpoint, **options))
