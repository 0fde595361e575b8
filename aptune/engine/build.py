"""What a run config builds: its datasets and its model (shared by train, eval and predict)."""
from __future__ import annotations

from pathlib import Path

from ..config import Config
from ..data.datasets import VideoDataset
from ..errors import ConfigError
from ..factory import create_model
from ..models.zoo import canonical_name, get_config

CLIP_FIELDS = ("num_frames", "img_size", "sampling", "sampling_rate")
# backbones whose weights ship inside the package: model.checkpoint=embedded
EMBEDDED = {"videomae-demo-4f": "vit-demo.pth", "videomae-demo": "videomae-demo.pth"}   # (the file keeps its old name)
# test models: no pre-trained weights exist for them, a random init is what they are for
RANDOM_MODELS = ("tiny",)


def resolve_checkpoint(model_cfg) -> str | None:
    """model.checkpoint as a path: `embedded` is the file shipped in aptune/assets for this model."""
    ckpt = model_cfg.checkpoint
    if ckpt != "embedded":
        return ckpt
    name = canonical_name(model_cfg.name)
    if name not in EMBEDDED:
        raise ConfigError(f"model.checkpoint=embedded: only {', '.join(EMBEDDED)} ship their weights inside aptune, "
                          f"not {model_cfg.name}")
    return str(Path(__file__).resolve().parent.parent / "assets" / EMBEDDED[name])


def check_backbone_source(model_cfg) -> None:
    """No long run starts on a random backbone by accident: without model.checkpoint, a backbone that
    is not a test model needs model.random_init=true (`aptune train --random-backbone`)."""
    m = model_cfg
    if m.checkpoint is not None or m.random_init or m.name.startswith(RANDOM_MODELS):
        return
    give = ("model.checkpoint=embedded (the weights shipped with aptune)" if canonical_name(m.name) in EMBEDDED else
            "model.checkpoint=FILE or a Hub id (configs/README.md names each preset's, e.g. MCG-NJU/videomae-base)")
    raise ConfigError(f"model.checkpoint is not set: {m.name} would train on a randomly initialised backbone, "
                      f"which an adapter cannot make up for. Give {give}, or ask for a random backbone with "
                      "model.random_init=true (aptune train --random-backbone)")


def use_adapter_clip(cfg: Config, clip: dict | None, explicit: set[str]) -> list[str]:
    """Set cfg.data's clip shape to the one an adapter was trained with, except fields given explicitly
    (dotted overrides, e.g. data.num_frames=16); returns a warning for each explicit one that differs."""
    warnings = []
    for k in CLIP_FIELDS:
        want = (clip or {}).get(k)
        if want is None:
            continue
        if f"data.{k}" in explicit:
            if getattr(cfg.data, k) != want:
                warnings.append(f"data.{k} is {getattr(cfg.data, k)}, the adapter was trained at {want}")
        else:
            setattr(cfg.data, k, want)
    return warnings


def build_dataset(cfg: Config, split: str, mode: str | None = None, norm: dict | None = None):
    """The VideoDataset of `split` ("train", "val", "test"): its list file read in `mode` (default:
    the split's own; "test" gives the multi-view protocol), or None when the list is not set.
    `norm`: {"mean", "std"} to use instead of the zoo backbone's (e.g. an adapter's record)."""
    d = cfg.data
    path = {"train": d.train_list, "val": d.val_list, "test": d.test_list}[split]
    if not path:
        return None
    mode = mode or split
    backbone = get_config(cfg.model.name)                 # its input normalisation
    kw = dict(root=d.root, mode=mode, num_frames=d.num_frames, sampling_rate=d.sampling_rate, img_size=d.img_size,
              sampling=d.sampling, short_side=d.short_side, seed=cfg.runtime.seed,
              skip_bad_videos=True,     # bad videos come back as records; the engine names, counts, skips or stops
              mean=tuple((norm or {}).get("mean") or backbone.mean), std=tuple((norm or {}).get("std") or backbone.std))
    if mode == "train":
        kw.update(flip=d.flip, num_sample=d.num_sample, rand_augment=d.rand_augment, defer_augment=True)
    elif mode == "test":
        kw.update(num_clips=d.test_clips, num_crops=d.test_crops)
    return VideoDataset(path, **kw)


def build_datasets(cfg: Config) -> dict:
    """{"train", "val", "test"}: VideoDatasets for the configured lists (None where a list is absent)."""
    return {split: build_dataset(cfg, split) for split in ("train", "val", "test")}


def build_model(cfg: Config, num_classes: int, checkpoint: str | bool | None = True):
    """The configured backbone with its method; weights from model.checkpoint (checkpoint=True),
    from another file (a path) or none (None: as initialised)."""
    m = cfg.model
    return create_model(m.name, num_classes=num_classes, num_frames=cfg.data.num_frames, img_size=cfg.data.img_size,
                        checkpoint=resolve_checkpoint(m) if checkpoint is True else checkpoint, method=cfg.method.name,
                        drop_path_rate=m.drop_path_rate, head_dropout=m.head_dropout, layout=m.layout,
                        **cfg.method.options)
