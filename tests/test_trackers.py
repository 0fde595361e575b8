"""output.loggers: W&B (offline mode) and MLflow (a local file store) with the real libraries, read back
with their own readers (`wandb leet inspect` on the offline run's transaction log; MlflowClient on the
store). One tiny training run serves every test (the imports are slow)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aptune.engine.logging import read_metrics
from aptune.engine.train import train
from aptune.errors import ConfigError

from engine_data import TensorVideos, tiny_cfg


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trackers")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        mp.setenv("WANDB_DATA_DIR", str(tmp / "wandb-data"))
        mp.setenv("WANDB_CACHE_DIR", str(tmp / "wandb-cache"))
        mp.setenv("MLFLOW_TRACKING_URI", (tmp / "mlruns").as_uri())
        mp.setenv("MLFLOW_ALLOW_FILE_STORE", "true")     # MLflow 3 keeps the file store behind this switch
        cfg = tiny_cfg(tmp, optim={"epochs": 1, "warmup_epochs": 0},
                       output={"loggers": ["jsonl", "wandb", "mlflow"], "project": "aptune-test"})
        out = train(cfg, datasets={"train": TensorVideos(8), "val": TensorVideos(4, mode="val"),
                                   "test": TensorVideos(3, mode="test")})
    return tmp, out, read_metrics(tmp / "run")


def test_wandb_offline_run_holds_config_metrics_and_adapter(run):
    tmp, out, jsonl = run
    offline = list((tmp / "run" / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    inspect = subprocess.run([str(Path(sys.executable).parent / "wandb"), "leet", "inspect", str(offline[0]), "--json"],
                             capture_output=True, text=True, timeout=120)
    records = [json.loads(line) for line in inspect.stdout.splitlines() if line.startswith("{")]
    first = next(r["run"] for r in records if r["type"] == "run")
    assert first["project"] == "aptune-test" and first["display_name"] == "run"
    assert first["config"]["update"]["optim"]["epochs"] == 1 and first["config"]["update"]["method"]["name"] == "apt"
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    logged = {(h["_step"], h["train/loss"]) for h in history if "train/loss" in h}
    expected = {(r["step"], r["loss"]) for r in jsonl if r["kind"] == "train"}
    assert len(expected) == 2 and {s for s, _ in logged} == {s for s, _ in expected}
    for (s, a), (_, b) in zip(sorted(logged), sorted(expected)):
        assert a == pytest.approx(b, rel=1e-6), s
    assert any(h.get("test/video_top1") == out["test"]["video_top1"] for h in history)
    art = next(r["artifact"] for r in records if r["type"] == "artifact")
    assert art["type"] == "model" and art["name"] == "run-adapter"
    assert {e["path"] for e in art["manifest"]["contents"]} == {"adapter.json", "adapter.safetensors", "README.md"}


def test_mlflow_file_store_holds_config_metrics_and_adapter(run):
    from mlflow import MlflowClient
    tmp, out, jsonl = run
    ids = json.loads((tmp / "run" / "trackers.json").read_text())
    client = MlflowClient((tmp / "mlruns").as_uri())
    r = client.get_run(ids["mlflow"])
    assert r.info.run_name == "run" and r.info.status == "FINISHED"
    assert client.get_experiment(r.info.experiment_id).name == "aptune-test"
    assert r.data.params["optim.epochs"] == "1" and r.data.params["model.name"] == "tiny"
    history = client.get_metric_history(r.info.run_id, "train/loss")
    expected = sorted((rec["step"], rec["loss"]) for rec in jsonl if rec["kind"] == "train")
    got = sorted((m.step, m.value) for m in history)
    assert [s for s, _ in got] == [s for s, _ in expected] == [1, 2]
    assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-6)
    assert r.data.metrics["test/video_top1"] == pytest.approx(out["test"]["video_top1"])
    files = {f.path for f in client.list_artifacts(r.info.run_id, "adapter")}
    assert files == {"adapter/adapter.json", "adapter/adapter.safetensors", "adapter/README.md"}
    assert {f.path for f in client.list_artifacts(r.info.run_id)} >= {"config.yaml", "adapter"}


def test_loggers_are_checked_before_any_work(tmp_path):
    cfg = tiny_cfg(tmp_path, output={"loggers": ["wandbb"]})
    with pytest.raises(ConfigError, match=r"output.loggers: unknown logger 'wandbb'; did you mean 'wandb'"):
        cfg.validate(need_train=False)
