"""Run configuration: dataclass-backed YAML with `_base_` includes and dotted overrides.

    cfg = load_config("configs/ucf101/vit_b_apt200.yaml", ["method.num_prompts=400", "optim.lr=0.05"])
    cfg.validate()          # impossible settings fail here, naming the field, before any work

A file may name `_base_: path` or a list of paths (relative to the file); bases are merged
first, later files and then overrides win. Unknown keys, malformed YAML and bad values raise a
one-line ValueError naming the file and the key (with a close-match suggestion).
The `method` section is `name` plus free-form options given to `aptune.methods.make_config`.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from .data.rand_augment import resolve_policy
from .errors import AptuneError, ConfigError, MissingFileError
from .factory import resolve_layout
from .hub import resolve
from .io import atomic_path
from .methods import get_method, list_methods, make_config
from .models.zoo import canonical_name, get_config, is_model, list_models


@dataclass
class DataConfig:
    train_list: str | None = None
    val_list: str | None = None
    test_list: str | None = None
    root: str | None = None
    num_frames: int = 16
    sampling_rate: int = 4
    img_size: int = 224
    sampling: str = "dense"            # dense | segment
    flip: bool = True
    num_sample: int = 1                # augmented views per loaded video (repeated augmentation)
    rand_augment: str | None = None    # timm policy string, e.g. rand-m4-n2-mstd0.2-inc1 (true: that one; false: off)
    num_workers: int = 4
    test_clips: int = 5
    test_crops: int = 3
    skip_bad_videos: bool = True       # a training video that cannot be decoded: skip it, named once (false: stop)
    max_bad_fraction: float = 0.1      # more bad videos than this fraction of a list stop the run
    short_side: int | None = None


@dataclass
class ModelConfig:
    name: str = "videomae-vit-b"
    checkpoint: str | None = None      # a file, a Hugging Face folder, or a Hub id org/name[@revision]
    num_classes: int | None = None     # None: taken from the training data
    drop_path_rate: float = 0.0
    head_dropout: float = 0.0
    layout: str | None = None          # token layout: frames | joint; None: the backbone's (image ViTs: frames)
    random_init: bool = False          # without a checkpoint: train on a random backbone (asked for explicitly)


@dataclass
class MethodConfig:
    name: str = "apt"
    options: dict = field(default_factory=dict)


@dataclass
class OptimConfig:
    optimizer: str = "adamw"           # adamw | sgd
    lr: float = 0.05                   # per total batch of 256; scaled linearly
    min_lr: float = 0.0                # also per 256
    warmup_lr: float = 0.0             # where the linear warm-up starts, per 256
    weight_decay: float = 1e-5
    epochs: int = 100
    warmup_epochs: float = 10
    batch_size: int = 8                # per process
    total_batch: int | None = None     # if set: batch_size = total_batch / (world_size * accum_steps)
    accum_steps: int = 1
    clip_grad: float | None = None
    label_smoothing: float = 0.1
    layer_decay: float = 1.0           # 1.0 = off (full fine-tuning uses 0.75)
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    momentum: float = 0.9


@dataclass
class EvalConfig:
    every_epochs: int = 1
    batch_size: int | None = None      # None: optim.batch_size
    test_at_end: bool = True


@dataclass
class OutputConfig:
    dir: str = "runs/default"
    keep_last: int = 2
    save_every_steps: int = 0          # 0: only at the end of every epoch
    loggers: list | None = None        # besides metrics.jsonl (always): tensorboard, wandb, mlflow; None: tensorboard
    tensorboard: bool = True           # deprecated (output.loggers): with loggers null, TensorBoard if installed
    project: str = "aptune"            # W&B project / MLflow experiment (WANDB_PROJECT, MLFLOW_EXPERIMENT_NAME win)


@dataclass
class RuntimeConfig:
    device: str = "auto"               # auto | cpu | cuda
    amp: str = "auto"                  # auto (GPU: bf16, CPU: fp32) | bf16 (also on CPU) | fp16 (GPU) | none
    compile: bool = False
    grad_checkpointing: bool = False
    seed: int = 0
    cache_features: bool = False       # linear probing: train the head on cached frozen features
    cache_views: int = 1               # augmented views cached per training video
    log_every_steps: int = 10


@dataclass
class PretrainConfig:
    """The `pretrain:` section (`aptune pretrain`): what only VideoMAE pre-training has. The rest of a
    pre-training run comes from the shared sections: model.name, data.train_list (a list file or a
    folder of videos), data.root, num_frames, img_size, sampling_rate (the frame stride), optim (epochs,
    batch_size, lr per 256, min_lr, weight_decay, warmup_epochs, betas, clip_grad) and runtime
    (device, amp, seed)."""
    mask_ratio: float = 0.9
    decoder_dim: int = 96
    decoder_depth: int = 2
    decoder_heads: int = 3
    norm_pix_loss: bool = True
    norm_pix_eps: float = 1e-6         # variance floor of the per-patch target normalisation (VideoMAE: 1e-6)
    min_crop: float = 1.0              # < 1: random square crops of at least this fraction of the side
    max_minutes: float | None = None   # stop early (and save) after this much wall time
    init: str | None = None            # continue from the encoder and decoder of this pre-training checkpoint
    out: str | None = None             # the checkpoint to write (default: <output.dir>/pretrain.pth)
    half: bool = False                 # store the weights in float16 (half the file size)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    source: str = field(default="<dict>", repr=False, compare=False)

    # ---- conversion ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {s: dataclasses.asdict(getattr(self, s)) for s in SECTIONS}
        d["method"] = {"name": self.method.name, **self.method.options}
        return d

    def save(self, path: str | os.PathLike) -> None:
        with atomic_path(path) as tmp:
            tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, d: dict, source: str = "<dict>") -> "Config":
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: top level must be a mapping of sections, got {type(d).__name__}")
        _check_keys(d, SECTIONS, source, "")
        cfg = cls(source=source)
        for name, sec in d.items():
            if sec is None:
                continue
            if not isinstance(sec, dict):
                raise ConfigError(f"{source}: section '{name}' must be a mapping, got {sec!r}")
            if name == "method":
                sec = dict(sec)
                cfg.method = MethodConfig(name=str(sec.pop("name", "apt")), options=sec)
                continue
            dc = getattr(cfg, name)
            _check_keys(sec, [f.name for f in dataclasses.fields(dc)], source, name + ".")
            for k, v in sec.items():
                key = f"{name}.{k}"
                setattr(dc, k, _normalise(v, source, key) if key in NORMALISED else
                        _coerce(v, _field_type(dc, k), source, key))
        return cfg

    # ---- validation ------------------------------------------------------------------------
    def validate(self, world_size: int = 1, need_train: bool = True, check_files: bool = True,
                 lists: tuple[str, ...] = ("val", "test")) -> None:
        """Fail before any work on settings that cannot run, naming the field. `lists`: the list files
        besides train that must exist when set (eval of the test split needs no val list)."""
        def bad(key, msg):
            raise ConfigError(f"{self.source}: {key}: {msg}")

        d, o, r = self.data, self.optim, self.runtime
        vit = _check_model_and_clip(self, bad)
        if self.method.name not in list_methods():
            bad("method.name", f"unknown method {self.method.name!r}; known: {', '.join(list_methods())}")
        spec = get_method(self.method.name)
        try:
            mcfg = make_config(self.method.name, **self.method.options)
        except ConfigError as e:
            bad("method", str(e))
        try:
            _, layout = resolve_layout(vit, self.model.layout)
        except ConfigError as e:
            bad("model.layout", str(e))
        if layout not in spec.layouts:
            bad("model.layout", f"method {self.method.name!r} does not support the {layout!r} token layout of "
                f"{self.model.name}; it supports {', '.join(spec.layouts)}")
        layers = getattr(mcfg, "layers", None)
        if layers is not None:
            for i in ([layers] if isinstance(layers, int) else layers):
                if not isinstance(i, int) or not -vit.depth <= i < vit.depth:
                    bad("method.layers", f"block {i!r} is outside {self.model.name}'s {vit.depth} blocks "
                        f"(0..{vit.depth - 1})")
        try:
            resolve_policy(d.rand_augment)
        except ConfigError as e:
            bad("data.rand_augment", str(e))
        if d.sampling not in ("dense", "segment"):
            bad("data.sampling", f"must be dense or segment, got {d.sampling!r}")
        for k in ("sampling_rate", "num_sample", "test_clips", "test_crops"):
            if getattr(d, k) < 1:
                bad(f"data.{k}", f"must be >= 1, got {getattr(d, k)}")
        if not 0 <= d.max_bad_fraction <= 1:
            bad("data.max_bad_fraction", f"must be within [0, 1], got {d.max_bad_fraction}")
        if o.optimizer not in ("adamw", "sgd"):
            bad("optim.optimizer", f"must be adamw or sgd, got {o.optimizer!r}")
        if o.batch_size < 1:
            bad("optim.batch_size", f"must be >= 1, got {o.batch_size}")
        if o.accum_steps < 1:
            bad("optim.accum_steps", f"must be >= 1, got {o.accum_steps}")
        if o.epochs < 1:
            bad("optim.epochs", f"must be >= 1, got {o.epochs}")
        if o.warmup_epochs < 0 or o.warmup_epochs > o.epochs:
            bad("optim.warmup_epochs", f"{o.warmup_epochs} must be within [0, epochs={o.epochs}]")
        if o.lr <= 0:
            bad("optim.lr", f"must be > 0, got {o.lr}")
        if o.min_lr < 0 or o.warmup_lr < 0:
            bad("optim.min_lr" if o.min_lr < 0 else "optim.warmup_lr", "must be >= 0")
        if not 0 < o.layer_decay <= 1:
            bad("optim.layer_decay", f"must be in (0, 1], got {o.layer_decay}")
        if not 0 <= o.label_smoothing < 1:
            bad("optim.label_smoothing", f"must be in [0, 1), got {o.label_smoothing}")
        if len(o.betas) != 2:
            bad("optim.betas", f"needs two values, got {o.betas}")
        if o.total_batch is not None:
            if o.total_batch < world_size:
                bad("optim.total_batch", f"total batch {o.total_batch} is smaller than the world size {world_size}")
            if o.total_batch % (world_size * o.accum_steps):
                bad("optim.total_batch", f"{o.total_batch} is not divisible by world size x accum_steps "
                    f"({world_size} x {o.accum_steps})")
        if r.device not in ("auto", "cpu", "cuda"):
            bad("runtime.device", f"must be auto, cpu or cuda, got {r.device!r}")
        if r.amp not in ("auto", "bf16", "fp16", "none"):
            bad("runtime.amp", f"must be auto, bf16, fp16 or none, got {r.amp!r}")
        if r.cache_features and not spec.caches_features:
            bad("runtime.cache_features", f"method {self.method.name!r} trains more than the head, so it cannot "
                "train on cached features (linear probing can)")
        if r.cache_views < 1:
            bad("runtime.cache_views", f"must be >= 1, got {r.cache_views}")
        if self.output.keep_last < 1:
            bad("output.keep_last", f"must be >= 1, got {self.output.keep_last}")
        for name in self.output.loggers or ():
            why = logger_problem(name)
            if why:
                bad("output.loggers", why)
        lists = [(f"data.{s}_list", getattr(d, f"{s}_list")) for s in lists]
        if need_train:
            if not d.train_list:
                bad("data.train_list", "is required for training")
            lists.insert(0, ("data.train_list", d.train_list))
        for key, p in lists:
            if check_files and p and not Path(p).is_file():
                bad(key, f"list file {p} is a directory" if Path(p).is_dir() else
                    f"list file not found: {p}{relative_note(p)}")
        if check_files and self.model.checkpoint and self.model.checkpoint != "embedded":
            try:                          # a local path, else a Hub id fetched into its cache now
                resolve(self.model.checkpoint)
            except AptuneError as e:
                bad("model.checkpoint", str(e))


LOGGERS = {"jsonl": None, "tensorboard": ("tensorboard", "tb"), "wandb": ("wandb", "wandb"),
           "mlflow": ("mlflow", "mlflow")}      # name -> (module, aptune extra)


def logger_problem(name) -> str | None:
    """Why `name` cannot be an output.loggers entry (unknown, or its package missing), else None."""
    if name not in LOGGERS:
        close = difflib.get_close_matches(str(name), list(LOGGERS), n=1)
        return f"unknown logger {name!r}" + (f"; did you mean {close[0]!r}?" if close else "") + \
            f"; known: {', '.join(LOGGERS)}"
    if LOGGERS[name] and importlib.util.find_spec(LOGGERS[name][0]) is None:
        return f"{name} is not installed: pip install 'aptune[{LOGGERS[name][1]}]'"
    return None


def loggers_of(output: OutputConfig) -> list[str]:
    """The loggers a run uses besides metrics.jsonl: output.loggers, else TensorBoard when output.tensorboard
    (the field kept from before output.loggers) and installed."""
    if output.loggers is not None:
        return [n for n in output.loggers if n != "jsonl"]
    return ["tensorboard"] if output.tensorboard and importlib.util.find_spec("tensorboard") else []


def relative_note(path: str) -> str:
    """Data paths are relative to the working directory (not to the YAML file, as `_base_` is): say so."""
    return "" if os.path.isabs(path) else f" (relative to the working directory {os.getcwd()})"


def _check_model_and_clip(cfg: Config, bad):
    """model.name is a zoo model and data's clip fits its tubelet and patch; returns its config."""
    if not is_model(cfg.model.name):
        bad("model.name", f"unknown model {cfg.model.name!r}; known: {', '.join(list_models())}")
    vit, d = get_config(cfg.model.name), cfg.data
    if d.num_frames < 1 or d.num_frames % vit.tubelet_size:
        bad("data.num_frames", f"{d.num_frames} is not a positive multiple of the tubelet size {vit.tubelet_size}")
    if d.img_size < 1 or d.img_size % vit.patch_size:
        bad("data.img_size", f"{d.img_size} is not a positive multiple of the patch size {vit.patch_size}")
    return vit


def validate_pretrain(cfg: Config, need_videos: bool = True) -> None:
    """What `aptune pretrain` needs, checked before any work, naming the field (`need_videos`: that
    data.train_list names videos; False when they come decoded)."""

    def bad(key, msg):
        raise ConfigError(f"{cfg.source}: {key}: {msg}")
    p, d, o = cfg.pretrain, cfg.data, cfg.optim
    _check_model_and_clip(cfg, bad)
    if not 0.0 < p.mask_ratio < 1.0:
        bad("pretrain.mask_ratio", f"must be in (0, 1), got {p.mask_ratio}")
    for k in ("decoder_dim", "decoder_depth", "decoder_heads"):
        if getattr(p, k) < 1:
            bad(f"pretrain.{k}", f"must be >= 1, got {getattr(p, k)}")
    if p.decoder_dim % p.decoder_heads:
        bad("pretrain.decoder_dim", f"{p.decoder_dim} is not divisible by pretrain.decoder_heads {p.decoder_heads}")
    if not 0.0 < p.min_crop <= 1.0:
        bad("pretrain.min_crop", f"must be in (0, 1], got {p.min_crop}")
    for k in ("epochs", "batch_size"):
        if getattr(o, k) < 1:
            bad(f"optim.{k}", f"must be >= 1, got {getattr(o, k)}")
    if o.lr < 0:
        bad("optim.lr", f"must be >= 0, got {o.lr}")
    if need_videos and not d.train_list:
        bad("data.train_list", "the videos to pre-train on (a list file or a folder) are not set")
    if need_videos and not Path(d.train_list).exists():
        bad("data.train_list", f"not found: {d.train_list}")
    if p.init and not Path(p.init).exists():
        bad("pretrain.init", f"file not found: {p.init}")
    if cfg.runtime.device == "cuda":
        if not torch.cuda.is_available():
            bad("runtime.device", "cuda asked for, but no CUDA device is available on this machine")


SECTIONS = ["data", "model", "method", "optim", "eval", "output", "runtime", "pretrain"]

# what a resumed run may not change: the model and method, the clip shape, and what decides the data
# position and the optimizer state; everything else may change, and the change is logged
FIXED_ON_RESUME = ("model.", "method.", "data.num_frames", "data.img_size", "data.sampling", "data.sampling_rate",
                   "data.num_sample", "data.train_list", "data.root", "optim.optimizer", "optim.batch_size",
                   "optim.accum_steps", "optim.total_batch", "runtime.seed", "runtime.cache_features",
                   "runtime.cache_views")


def _flat(cfg: "Config") -> dict:
    d = cfg.to_dict()
    out = {}
    for sec, fields in d.items():
        for k, v in fields.items():
            out[f"{sec}.{k}"] = v
    out["model.name"] = canonical_name(out["model.name"])     # a model's old name (vit-demo) is the same model
    return out


def resume_changes(stored: "Config", requested: "Config") -> tuple[list[str], list[tuple[str, object, object]]]:
    """(refused, changed): the fields a resume may not change (FIXED_ON_RESUME) that differ, as
    'field: stored -> requested', and the other differing fields as (field, stored, requested)."""
    a, b = _flat(stored), _flat(requested)
    refused, changed = [], []
    for key in sorted(set(a) | set(b)):
        old, new = a.get(key), b.get(key)
        if old == new:
            continue
        if key.startswith(FIXED_ON_RESUME):
            refused.append(f"{key}: {old!r} -> {new!r}")
        else:
            changed.append((key, old, new))
    return refused, changed


def _check_keys(d: dict, known: list[str], source: str, prefix: str) -> None:
    for k in d:
        if k not in known:
            close = difflib.get_close_matches(str(k), known, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; known: {', '.join(known)}"
            raise ConfigError(f"{source}: unknown key '{prefix}{k}'{hint}")


# fields whose written value is checked and normalised by a function (value -> stored value)
NORMALISED = {"data.rand_augment": resolve_policy}


def _normalise(v: Any, source: str, key: str) -> Any:
    try:
        return NORMALISED[key](v)
    except ConfigError as e:
        raise ConfigError(f"{source}: {key}: {e}") from None


def _field_type(dc, name: str) -> str:
    return str(next(f.type for f in dataclasses.fields(dc) if f.name == name))


def _coerce(v: Any, typ: str, source: str, key: str) -> Any:
    """Check a YAML value against the field's annotation (ints accepted where floats are)."""
    if v is None:
        if "None" in typ:
            return None
        raise ConfigError(f"{source}: {key}: may not be null")
    base = typ.split("|")[0].strip()
    if base == "float" and isinstance(v, str):   # YAML 1.1 reads 5e-4 (no dot) as a string
        try:
            v = float(v)
        except ValueError:
            pass
    ok = {"int": isinstance(v, int) and not isinstance(v, bool),
          "float": isinstance(v, (int, float)) and not isinstance(v, bool),
          "bool": isinstance(v, bool), "str": isinstance(v, str), "list": isinstance(v, list),
          "dict": isinstance(v, dict)}.get(base, True)
    if not ok:
        raise ConfigError(f"{source}: {key}: expected {base}, got {v!r}")
    return float(v) if base == "float" else v


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise MissingFileError(f"config file not found: {path}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not a text file: byte {e.start} (0x{raw[e.start]:02x}) "
                          "is not UTF-8") from None
    try:
        d = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}:{where}: malformed YAML: {problem}") from None
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(d).__name__}")
    return d


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _load_tree(path: Path, seen: tuple = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: _base_ include cycle")
    d = _read_yaml(path)
    bases = d.pop("_base_", [])
    merged: dict = {}
    for b in [bases] if isinstance(bases, str) else bases:
        merged = _merge(merged, _load_tree(path.parent / b, seen + (path,)))
    return _merge(merged, d)


def apply_override(d: dict, item: str) -> dict:
    """`a.b=value` with value parsed as a YAML scalar (or list) into the nested dict d."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected section.key=value")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"override {item!r}: key must be section.key, e.g. optim.lr=0.01")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"override {item!r}: value is not valid YAML") from None
    sec = d.setdefault(parts[0], {})
    if not isinstance(sec, dict):
        raise ConfigError(f"override {item!r}: section {parts[0]!r} is not a mapping")
    sec[parts[1]] = value
    return d


def load_config(path: str | os.PathLike, overrides: list[str] | tuple = ()) -> Config:
    """Read a YAML config (with `_base_` includes) and apply dotted overrides."""
    d = _load_tree(Path(path))
    for item in overrides:
        apply_override(d, item)
    return Config.from_dict(d, source=str(path))
