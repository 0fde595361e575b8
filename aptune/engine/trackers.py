"""Experiment trackers behind `output.loggers`: Weights & Biases and MLflow (optional extras:
`pip install 'aptune[wandb]'`, `'aptune[mlflow]'`), each imported only when configured.

Each logs the resolved config once, every metric record as `<kind>/<name>` at its global step, and the
final adapter folder as an artefact. Where and how is the library's own setting, read from its
environment: W&B's WANDB_MODE (offline writes <run>/wandb/offline-run-*), WANDB_PROJECT, WANDB_ENTITY;
MLflow's MLFLOW_TRACKING_URI (a server, a database, or a local file store). A resumed run continues the
same tracker run: the ids are kept in <run>/trackers.json.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from ..io import write_json

IDS = "trackers.json"


def numeric(values: dict) -> dict:
    return {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def flat(config: dict) -> dict:
    """{"optim.lr": 0.05, ...} from the resolved config's sections."""
    return {f"{sec}.{k}": v for sec, fields in config.items() if isinstance(fields, dict) for k, v in fields.items()}


class WandbTracker:
    name = "wandb"

    def __init__(self, run_dir: Path, config: dict, project: str, run_id: str | None):
        import wandb  # optional (aptune[wandb]), heavy: imported when this tracker is used
        self.wandb = wandb
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", project), name=run_dir.name,
                              dir=str(run_dir), config=config, id=run_id, resume="allow" if run_id else None)
        self.id = self.run.id

    def log(self, kind: str, step: int, values: dict) -> None:
        self.run.log({f"{kind}/{k}": v for k, v in numeric(values).items()}, step=step)

    def log_artifact(self, folder: Path, name: str) -> None:
        art = self.wandb.Artifact(re.sub(r"[^\w.-]", "-", f"{self.run.name}-{name}"), type="model")
        art.add_dir(str(folder))
        self.run.log_artifact(art)

    def close(self) -> None:
        self.run.finish()


class MlflowTracker:
    name = "mlflow"

    def __init__(self, run_dir: Path, config: dict, project: str, run_id: str | None):
        from mlflow import MlflowClient  # optional (aptune[mlflow]), heavy: imported when used
        from mlflow.entities import Param
        self.client = MlflowClient()              # MLFLOW_TRACKING_URI, else MLflow's default store
        if run_id is None:
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME", project)
            exp = self.client.get_experiment_by_name(name)
            exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(name)
            run_id = self.client.create_run(exp_id, run_name=run_dir.name).info.run_id
            params = [Param(k, str(v)[:6000]) for k, v in flat(config).items()]
            for i in range(0, len(params), 100):                 # MLflow takes 100 params per batch
                self.client.log_batch(run_id, params=params[i:i + 100])
            self.client.log_dict(run_id, config, "config.yaml")
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.id = run_id

    def log(self, kind: str, step: int, values: dict) -> None:
        from mlflow.entities import Metric  # (see __init__)
        now = int(time.time() * 1000)
        metrics = [Metric(f"{kind}/{k}", float(v), now, step) for k, v in numeric(values).items()]
        if metrics:
            self.client.log_batch(self.id, metrics=metrics)

    def log_artifact(self, folder: Path, name: str) -> None:
        self.client.log_artifacts(self.id, str(folder), name)

    def close(self) -> None:
        self.client.set_terminated(self.id)


TRACKERS = {"wandb": WandbTracker, "mlflow": MlflowTracker}


def open_trackers(names, run_dir: Path, config: dict, project: str, resumed: bool) -> list:
    """Start (or, for a resumed run, continue) the named trackers; records their ids in run_dir."""
    ids_path = run_dir / IDS
    ids = json.loads(ids_path.read_text()) if resumed and ids_path.exists() else {}
    out = [TRACKERS[n](run_dir, config, project, ids.get(n)) for n in names if n in TRACKERS]
    if out:
        write_json(ids_path, {t.name: t.id for t in out})
    return out
