"""Run logging, on rank 0 only: metrics.jsonl (one JSON record per line, always: resume, `aptune plot`
and the API read it), and the loggers of `output.loggers`: TensorBoard, W&B, MLflow (trackers.py)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ..console import warn
from ..errors import MissingFileError
from .trackers import numeric, open_trackers


class MetricsLogger:
    """`log(kind, step, **values)` appends {"kind", "step", ...} to run_dir/metrics.jsonl."""

    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True, tensorboard: bool = True,
                 trackers: tuple = (), config: dict | None = None, project: str = "aptune", resumed: bool = False):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = enabled
        self.tb = None
        self.trackers = open_trackers(trackers, Path(run_dir), config or {}, project, resumed) if enabled else []
        if enabled and tensorboard:
            try:            # imported when asked for: the optional tensorboard package (aptune[tb])
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(Path(run_dir) / "tb"))
            except Exception:  # tensorboard not installed: JSONL only
                self.tb = None

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (a resumed run rewrites them)."""
        if not self.enabled or not self.path.exists():
            return
        keep = [ln for ln in self.path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
        self.path.write_text("".join(ln + "\n" for ln in keep))

    def start_afresh(self) -> None:
        """A fresh run: an old metrics.jsonl (a run that died before its first checkpoint) is replaced."""
        if self.enabled and self.path.exists() and self.path.stat().st_size:
            n = len([ln for ln in self.path.read_text().splitlines() if ln.strip()])
            warn(f"{self.path}: starting afresh, its {n} earlier record(s) are replaced")
            self.path.write_text("")

    def log(self, kind: str, step: int, **values) -> None:
        if not self.enabled:
            return
        rec = {"kind": kind, "step": step}
        rec.update({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()})
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if self.tb is not None:
            for k, v in numeric(values).items():
                self.tb.add_scalar(f"{kind}/{k}", v, step)
        for t in self.trackers:
            t.log(kind, step, values)

    def log_artifact(self, folder: str | os.PathLike, name: str = "adapter") -> None:
        """Hand a folder (the adapter) to every tracker that keeps artefacts."""
        for t in self.trackers:
            t.log_artifact(Path(folder), name)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        for t in self.trackers:
            t.close()


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise MissingFileError(f"{path} not found: not a training run folder")
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
