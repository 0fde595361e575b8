"""What a resume may not change, and what it must say.

The config: the model and method, the clip shape, and what decides the data position and the optimizer
state are fixed (FIXED_ON_RESUME: refused, naming each field); any other change applies and is logged.

The classes: checked before anything is written, so a refused resume leaves the run folder as it was.
The learning-rate schedule: a resume with other optim.epochs / warmup_epochs / lr / min_lr follows the
new schedule from the step it resumes at; the jump is named (old and new lr at that step, where the
cosine now ends) rather than refused, because extending a finished run is a common, deliberate wish,
and keeping the old schedule would train the added epochs at min_lr (0 in the presets): no training.
"""
from __future__ import annotations

from pathlib import Path

from ..config import Config
from ..errors import ConfigError
from ..models.zoo import canonical_name
from .optim import lr_at, scaled_lr

# what a resumed run may not change: the model and method, the clip shape, and what decides the data
# position and the optimizer state; everything else may change, and the change is logged
FIXED_ON_RESUME = ("model.", "method.", "data.num_frames", "data.img_size", "data.sampling", "data.sampling_rate",
                   "data.num_sample", "data.train_list", "data.root", "optim.optimizer", "optim.batch_size",
                   "optim.accum_steps", "optim.total_batch", "runtime.seed", "runtime.cache_features",
                   "runtime.cache_views")


def _flat(cfg: Config) -> dict:
    d = cfg.to_dict()
    out = {}
    for sec, fields in d.items():
        for k, v in fields.items():
            out[f"{sec}.{k}"] = v
    out["model.name"] = canonical_name(out["model.name"])     # a model's old name (vit-demo) is the same model
    return out


def resume_changes(stored: Config, requested: Config) -> tuple[list[str], list[tuple[str, object, object]]]:
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


def _show(n: int, names) -> str:
    return f"{n} classes" + (f" ({', '.join(names[:6])}{', ...' if len(names) > 6 else ''})" if names else "")


def _diff(old: list, new: list) -> str:
    added = [c for c in new if c not in old]
    gone = [c for c in old if c not in new]
    parts = ([f"new: {', '.join(added[:5])}"] if added else []) + ([f"gone: {', '.join(gone[:5])}"] if gone else [])
    return " [" + ("; ".join(parts) or "same names, reordered") + "]"


def check_resume_classes(run_dir: Path, payload: dict, num_classes: int, names: list | None) -> None:
    """Refuse a resume whose classes (count or names) are not the ones the snapshot was trained on, e.g.
    after `aptune prepare` was re-run with a new class folder."""
    stored = payload.get("classes")
    if stored is None:          # a snapshot from before classes were recorded: the head's rows
        heads = [t for k, t in payload["model"].items() if k.endswith("head.weight")]
        stored = {"num_classes": heads[0].shape[0] if heads else num_classes, "names": None}
    old_n, old_names = stored["num_classes"], stored["names"]
    if old_n == num_classes and (old_names is None or names is None or list(old_names) == list(names)):
        return
    diff = _diff(list(old_names), list(names)) if old_names and names else ""
    raise ConfigError(f"resume: {run_dir} was trained on {_show(old_n, old_names)}; the training data now has "
                      f"{_show(num_classes, names)}{diff}. A resume cannot change the classes (the head and its "
                      "labels would no longer match): restore the old list and classes.txt, or start a new run in "
                      "another output.dir")


def schedule_change(stored: Config, steps_per_epoch: int, world_size: int, step: int, new: tuple) -> str | None:
    """A line naming the lr jump at `step` when the schedule `new` (total_steps, warmup_steps, base_lr,
    min_lr, warmup_lr) differs from the one `stored` (the snapshot's config) implies; None when the same."""
    o = stored.optim
    old = (o.epochs * steps_per_epoch, round(o.warmup_epochs * steps_per_epoch),
           *(scaled_lr(v, o.batch_size, o.accum_steps, world_size) for v in (o.lr, o.min_lr, o.warmup_lr)))
    if tuple(old) == tuple(new):
        return None
    a, b = (lr_at(step, *s[:4], warmup_lr=s[4]) for s in (old, new))
    return (f"resume: the learning-rate schedule changes at step {step}: lr {a:.2e} on the old schedule, {b:.2e} on "
            f"the new one; warm-up ends at step {new[1]} (was {old[1]}), the cosine reaches {new[3]:.2e} at step "
            f"{new[0]} (was {old[0]})")
