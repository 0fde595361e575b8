"""What a resume may not change besides the config (config.resume_changes): the classes.

Checked before anything is written: a refused resume leaves the run folder as it was.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError


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
