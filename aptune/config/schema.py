"""The run configuration's sections as dataclasses (what each field means, its default), and `Config`:
their conversion to and from a dict, checked field by field (fields.py), and `validate`
(validation.py)."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

import yaml

from ..errors import ConfigError
from ..io import atomic_path
from .fields import check_keys, field_value
from .validation import validate_config


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
        check_keys(d, SECTIONS, source, "")
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
            check_keys(sec, [f.name for f in dataclasses.fields(dc)], source, name + ".")
            for k, v in sec.items():
                setattr(dc, k, field_value(dc, k, v, source, f"{name}.{k}"))
        return cfg

    def validate(self, world_size: int = 1, need_train: bool = True, check_files: bool = True,
                 lists: tuple[str, ...] = ("val", "test")) -> None:
        """Fail before any work on settings that cannot run, naming the field (validation.py). `lists`: the
        list files besides train that must exist when set (eval of the test split needs no val list)."""
        validate_config(self, world_size, need_train, check_files, lists)


SECTIONS = ["data", "model", "method", "optim", "eval", "output", "runtime", "pretrain"]
