"""Checks that fail before any work, naming the file and the field: `validate_config` (what `Config.validate`
runs, one small check per section) and `validate_pretrain` (what `aptune pretrain` needs). The checks
read the config's fields only; each raises ConfigError("<file>: <section.field>: <why>")."""
from __future__ import annotations

import difflib
import importlib.util
import os
from pathlib import Path

import torch

from ..data.rand_augment import resolve_policy
from ..errors import AptuneError, ConfigError
from ..factory import resolve_layout
from ..hub import resolve
from ..methods import get_method, list_methods, make_config
from ..models.zoo import get_config, is_model, list_models

LOGGERS = {"jsonl": None, "tensorboard": ("tensorboard", "tb"), "wandb": ("wandb", "wandb"),
           "mlflow": ("mlflow", "mlflow")}      # name -> (module, aptune extra)


def refuse(cfg, key: str, msg: str):
    raise ConfigError(f"{cfg.source}: {key}: {msg}")


def validate_config(cfg, world_size: int = 1, need_train: bool = True, check_files: bool = True,
                    lists: tuple[str, ...] = ("val", "test")) -> None:
    """Every check of a run's config (Config.validate)."""
    vit = check_model_and_clip(cfg)
    spec = check_method(cfg, vit)
    check_data(cfg)
    check_optim(cfg, world_size)
    check_runtime(cfg, spec)
    check_output(cfg)
    check_files_named(cfg, need_train, lists, check_files)


def check_model_and_clip(cfg):
    """model.name is a zoo model and data's clip fits its tubelet and patch; returns its config."""
    if not is_model(cfg.model.name):
        refuse(cfg, "model.name", f"unknown model {cfg.model.name!r}; known: {', '.join(list_models())}")
    vit, d = get_config(cfg.model.name), cfg.data
    if d.num_frames < 1 or d.num_frames % vit.tubelet_size:
        refuse(cfg, "data.num_frames",
               f"{d.num_frames} is not a positive multiple of the tubelet size {vit.tubelet_size}")
    if d.img_size < 1 or d.img_size % vit.patch_size:
        refuse(cfg, "data.img_size", f"{d.img_size} is not a positive multiple of the patch size {vit.patch_size}")
    return vit


def check_method(cfg, vit):
    """The method exists, its options build its config, it supports the backbone's token layout, and the
    blocks it names are the backbone's; returns its registry entry."""
    name = cfg.method.name
    if name not in list_methods():
        refuse(cfg, "method.name", f"unknown method {name!r}; known: {', '.join(list_methods())}")
    spec = get_method(name)
    try:
        mcfg = make_config(name, **cfg.method.options)
    except ConfigError as e:
        refuse(cfg, "method", str(e))
    try:
        _, layout = resolve_layout(vit, cfg.model.layout)
    except ConfigError as e:
        refuse(cfg, "model.layout", str(e))
    if layout not in spec.layouts:
        refuse(cfg, "model.layout", f"method {name!r} does not support the {layout!r} token layout of "
               f"{cfg.model.name}; it supports {', '.join(spec.layouts)}")
    layers = getattr(mcfg, "layers", None)
    for i in [layers] if isinstance(layers, int) else layers or ():
        if not isinstance(i, int) or not -vit.depth <= i < vit.depth:
            refuse(cfg, "method.layers", f"block {i!r} is outside {cfg.model.name}'s {vit.depth} blocks "
                   f"(0..{vit.depth - 1})")
    return spec


def check_data(cfg) -> None:
    d = cfg.data
    try:
        resolve_policy(d.rand_augment)
    except ConfigError as e:
        refuse(cfg, "data.rand_augment", str(e))
    if d.sampling not in ("dense", "segment"):
        refuse(cfg, "data.sampling", f"must be dense or segment, got {d.sampling!r}")
    for k in ("sampling_rate", "num_sample", "test_clips", "test_crops"):
        if getattr(d, k) < 1:
            refuse(cfg, f"data.{k}", f"must be >= 1, got {getattr(d, k)}")
    if not 0 <= d.max_bad_fraction <= 1:
        refuse(cfg, "data.max_bad_fraction", f"must be within [0, 1], got {d.max_bad_fraction}")


def check_optim(cfg, world_size: int) -> None:
    o = cfg.optim
    if o.optimizer not in ("adamw", "sgd"):
        refuse(cfg, "optim.optimizer", f"must be adamw or sgd, got {o.optimizer!r}")
    for k in ("batch_size", "accum_steps", "epochs"):
        if getattr(o, k) < 1:
            refuse(cfg, f"optim.{k}", f"must be >= 1, got {getattr(o, k)}")
    if o.warmup_epochs < 0 or o.warmup_epochs > o.epochs:
        refuse(cfg, "optim.warmup_epochs", f"{o.warmup_epochs} must be within [0, epochs={o.epochs}]")
    if o.lr <= 0:
        refuse(cfg, "optim.lr", f"must be > 0, got {o.lr}")
    if o.min_lr < 0 or o.warmup_lr < 0:
        refuse(cfg, "optim.min_lr" if o.min_lr < 0 else "optim.warmup_lr", "must be >= 0")
    if not 0 < o.layer_decay <= 1:
        refuse(cfg, "optim.layer_decay", f"must be in (0, 1], got {o.layer_decay}")
    if not 0 <= o.label_smoothing < 1:
        refuse(cfg, "optim.label_smoothing", f"must be in [0, 1), got {o.label_smoothing}")
    if len(o.betas) != 2:
        refuse(cfg, "optim.betas", f"needs two values, got {o.betas}")
    check_total_batch(cfg, world_size)


def check_total_batch(cfg, world_size: int) -> None:
    """optim.total_batch, when set, is a whole number of batches per process and accumulation step."""
    o = cfg.optim
    if o.total_batch is None:
        return
    if o.total_batch < world_size:
        refuse(cfg, "optim.total_batch", f"total batch {o.total_batch} is smaller than the world size {world_size}")
    if o.total_batch % (world_size * o.accum_steps):
        refuse(cfg, "optim.total_batch", f"{o.total_batch} is not divisible by world size x accum_steps "
               f"({world_size} x {o.accum_steps})")


def check_runtime(cfg, spec) -> None:
    r = cfg.runtime
    if r.device not in ("auto", "cpu", "cuda"):
        refuse(cfg, "runtime.device", f"must be auto, cpu or cuda, got {r.device!r}")
    if r.amp not in ("auto", "bf16", "fp16", "none"):
        refuse(cfg, "runtime.amp", f"must be auto, bf16, fp16 or none, got {r.amp!r}")
    if r.cache_features and not spec.caches_features:
        refuse(cfg, "runtime.cache_features", f"method {cfg.method.name!r} trains more than the head, so it cannot "
               "train on cached features (linear probing can)")
    if r.cache_views < 1:
        refuse(cfg, "runtime.cache_views", f"must be >= 1, got {r.cache_views}")


def check_output(cfg) -> None:
    if cfg.output.keep_last < 1:
        refuse(cfg, "output.keep_last", f"must be >= 1, got {cfg.output.keep_last}")
    for name in cfg.output.loggers or ():
        why = logger_problem(name)
        if why:
            refuse(cfg, "output.loggers", why)


def check_files_named(cfg, need_train: bool, lists: tuple[str, ...], check_files: bool) -> None:
    """Training names its list; with `check_files`, the list files (train's when training, and `lists`'
    when set) and a model.checkpoint are there (a checkpoint that is a Hub id is fetched into its cache now)."""
    d = cfg.data
    if need_train and not d.train_list:
        refuse(cfg, "data.train_list", "is required for training")
    if not check_files:
        return
    named = [(f"data.{s}_list", getattr(d, f"{s}_list")) for s in lists]
    if need_train:
        named.insert(0, ("data.train_list", d.train_list))
    for key, p in named:
        if p and not Path(p).is_file():
            refuse(cfg, key, f"list file {p} is a directory" if Path(p).is_dir() else
                   f"list file not found: {p}{relative_note(p)}")
    if cfg.model.checkpoint and cfg.model.checkpoint != "embedded":
        try:                          # a local path, else a Hub id fetched into its cache now
            resolve(cfg.model.checkpoint)
        except AptuneError as e:
            refuse(cfg, "model.checkpoint", str(e))


def logger_problem(name) -> str | None:
    """Why `name` cannot be an output.loggers entry (unknown, or its package missing), else None."""
    if name not in LOGGERS:
        close = difflib.get_close_matches(str(name), list(LOGGERS), n=1)
        return f"unknown logger {name!r}" + (f"; did you mean {close[0]!r}?" if close else "") + \
            f"; known: {', '.join(LOGGERS)}"
    if LOGGERS[name] and importlib.util.find_spec(LOGGERS[name][0]) is None:
        return f"{name} is not installed: pip install 'aptune[{LOGGERS[name][1]}]'"
    return None


def loggers_of(output) -> list[str]:
    """The loggers a run uses besides metrics.jsonl: output.loggers, else TensorBoard when output.tensorboard
    (the field kept from before output.loggers) and installed."""
    if output.loggers is not None:
        return [n for n in output.loggers if n != "jsonl"]
    return ["tensorboard"] if output.tensorboard and importlib.util.find_spec("tensorboard") else []


def relative_note(path: str) -> str:
    """Data paths are relative to the working directory (not to the YAML file, as `_base_` is): say so."""
    return "" if os.path.isabs(path) else f" (relative to the working directory {os.getcwd()})"


def validate_pretrain(cfg, need_videos: bool = True) -> None:
    """What `aptune pretrain` needs, checked before any work, naming the field (`need_videos`: that
    data.train_list names videos; False when they come decoded)."""
    p, d, o = cfg.pretrain, cfg.data, cfg.optim
    check_model_and_clip(cfg)
    check_pretrain_section(cfg)
    for k in ("epochs", "batch_size"):
        if getattr(o, k) < 1:
            refuse(cfg, f"optim.{k}", f"must be >= 1, got {getattr(o, k)}")
    if o.lr < 0:
        refuse(cfg, "optim.lr", f"must be >= 0, got {o.lr}")
    if need_videos and not d.train_list:
        refuse(cfg, "data.train_list", "the videos to pre-train on (a list file or a folder) are not set")
    if need_videos and not Path(d.train_list).exists():
        refuse(cfg, "data.train_list", f"not found: {d.train_list}")
    if p.init and not Path(p.init).exists():
        refuse(cfg, "pretrain.init", f"file not found: {p.init}")
    if cfg.runtime.device == "cuda" and not torch.cuda.is_available():
        refuse(cfg, "runtime.device", "cuda asked for, but no CUDA device is available on this machine")


def check_pretrain_section(cfg) -> None:
    p = cfg.pretrain
    if not 0.0 < p.mask_ratio < 1.0:
        refuse(cfg, "pretrain.mask_ratio", f"must be in (0, 1), got {p.mask_ratio}")
    for k in ("decoder_dim", "decoder_depth", "decoder_heads"):
        if getattr(p, k) < 1:
            refuse(cfg, f"pretrain.{k}", f"must be >= 1, got {getattr(p, k)}")
    if p.decoder_dim % p.decoder_heads:
        refuse(cfg, "pretrain.decoder_dim",
               f"{p.decoder_dim} is not divisible by pretrain.decoder_heads {p.decoder_heads}")
    if not 0.0 < p.min_crop <= 1.0:
        refuse(cfg, "pretrain.min_crop", f"must be in (0, 1], got {p.min_crop}")
