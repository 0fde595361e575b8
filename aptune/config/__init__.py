"""Run configuration: dataclass-backed YAML with `_base_` includes and dotted overrides.

    cfg = load_config("configs/ucf101/vit_b_apt200.yaml", ["method.num_prompts=400", "optim.lr=0.05"])
    cfg.validate()          # impossible settings fail here, naming the field, before any work

A file may name `_base_: path` or a list of paths (relative to the file); bases are merged
first, later files and then overrides win. Unknown keys, malformed YAML and bad values raise a
one-line ValueError naming the file and the key (with a close-match suggestion).
The `method` section is `name` plus free-form options given to `aptune.methods.make_config`.

    schema.py      the sections (dataclasses) and Config
    fields.py      a YAML value checked against its field
    loading.py     YAML files, `_base_`, overrides
    validation.py  the checks before any work, one per section
What a resumed run may not change is the run state's: engine/resume.py.
"""
from .loading import apply_override, load_config
from .schema import (
    SECTIONS,
    Config,
    DataConfig,
    EvalConfig,
    MethodConfig,
    ModelConfig,
    OptimConfig,
    OutputConfig,
    PretrainConfig,
    RuntimeConfig,
)
from .validation import LOGGERS, logger_problem, loggers_of, relative_note, validate_pretrain

__all__ = ["LOGGERS", "SECTIONS", "Config", "DataConfig", "EvalConfig", "MethodConfig", "ModelConfig", "OptimConfig",
           "OutputConfig", "PretrainConfig", "RuntimeConfig", "apply_override", "load_config", "logger_problem",
           "loggers_of", "relative_note", "validate_pretrain"]
