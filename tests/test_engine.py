"""Engine: multi-view metrics by hand, optimizer groups and schedule, a tiny training run,
non-finite loss handling, interrupted checkpoint writes, linear probing on cached features."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from aptune.engine import state
from aptune.engine.evaluate import video_level_metrics
from aptune.engine.optim import build_optimizer, lr_at, param_groups, scaled_lr
from aptune.engine.train import NonFiniteLossError, train

from engine_data import TensorVideos, tiny_cfg


def softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def test_video_level_metrics_by_hand():
    views = {0: [[5, 0, 0], [0, 1, 0]],      # label 0: views say 0 and 1; averaged probs pick 0
             1: [[0, 0, 1], [0, 0, 1]],      # label 1: both views say 2
             2: [[0, 0, 3], [1, 0, 0]],      # label 2: views say 2 and 0; averaged probs pick 2
             7: [[0, 2, 0], [0, 0, 0.5]]}    # label 0: views say 1 and 2
    labels = {0: 0, 1: 1, 2: 2, 7: 0}
    m = video_level_metrics({k: torch.tensor(v, dtype=torch.float) for k, v in views.items()}, labels)
    # independent reference: plain python
    clip_correct = sum(max(range(3), key=lambda c: row[c]) == labels[k] for k, v in views.items() for row in v)
    video_pred = {}
    for k, v in views.items():
        probs = [softmax(row) for row in v]
        avg = [sum(p[c] for p in probs) / len(probs) for c in range(3)]
        video_pred[k] = max(range(3), key=lambda c: avg[c])
    assert video_pred == {0: 0, 1: 2, 2: 2, 7: 1}
    assert m["clip_top1"] == pytest.approx(100 * clip_correct / 8) == pytest.approx(100 * 2 / 8)
    assert m["video_top1"] == pytest.approx(100 * 2 / 4)
    assert m["video_top5"] == 100.0 and m["num_videos"] == 4 and m["num_views"] == 8
    assert m["per_class"] == {0: 50.0, 1: 0.0, 2: 100.0}
    assert m["confusion"] == [[1, 1, 0], [0, 0, 1], [0, 0, 1]]


def test_video_level_top5_with_many_classes():
    C = 8
    logits = {0: torch.arange(C, dtype=torch.float)[None].repeat(3, 1)}   # ranks: 7, 6, 5, 4, 3 in top-5
    assert video_level_metrics(logits, {0: 3})["video_top5"] == 100.0
    assert video_level_metrics(logits, {0: 2})["video_top5"] == 0.0
    assert video_level_metrics(logits, {0: 2})["clip_top5"] == 0.0


def test_param_groups_decay_and_layer_decay():
    from aptune import create_model
    m = create_model("tiny", num_classes=3, method="apt", num_prompts=2)
    groups = param_groups(m, weight_decay=0.1)
    decay = {n for g in groups if g["weight_decay"] > 0 for n in g["names"]}
    no_decay = {n for g in groups if g["weight_decay"] == 0 for n in g["names"]}
    assert "blocks.0.kv_prompts.key" in decay and "head.weight" in decay
    assert {"blocks.0.kv_prompts.scale", "head.bias", "fc_norm.weight", "fc_norm.bias"} <= no_decay
    assert decay | no_decay == set(m.tuning.trainable_names)

    full = create_model("tiny", num_classes=3, method="full")
    groups = param_groups(full, weight_decay=0.05, layer_decay=0.5)
    scale = {n: g["lr_scale"] for g in groups for n in g["names"]}
    depth = 4
    assert scale["head.weight"] == 1.0
    assert scale["blocks.3.attn.qkv.weight"] == 0.5
    assert scale["blocks.0.mlp.fc1.weight"] == 0.5 ** depth
    assert scale["patch_embed.proj.weight"] == 0.5 ** (depth + 1)
    assert sum(len(g["params"]) for g in groups) == len(list(full.parameters()))


def authors_cosine_scheduler(base_value, final_value, epochs, niter_per_ep, warmup_epochs=0, start_warmup_value=0):
    """wgcban/apt utils.py cosine_scheduler (VideoMAE's), restated: linspace warm-up, then a cosine over the
    remaining iterations; run_class_apt.py calls it without start_warmup_value, so the warm-up starts at 0."""
    warmup_iters = warmup_epochs * niter_per_ep
    warmup = np.linspace(start_warmup_value, base_value, warmup_iters) if warmup_epochs > 0 else np.array([])
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    cosine = [final_value + 0.5 * (base_value - final_value) * (1 + math.cos(math.pi * i / len(iters))) for i in iters]
    return np.concatenate((warmup, cosine)).tolist()


@pytest.mark.parametrize("epochs,niter,warm,start", [(100, 7, 10, 0.0), (50, 3, 10, 0.0), (5, 4, 1, 2e-4),
                                                     (3, 1, 1, 0.0), (4, 5, 0, 0.0)])
def test_lr_schedule_is_the_authors_cosine_scheduler(epochs, niter, warm, start):
    base, final = 0.0125, 2.5e-7          # 0.05 and 1e-6 per 256 at the authors' 8 x 8 clips
    want = authors_cosine_scheduler(base, final, epochs, niter, warm, start)
    got = [lr_at(s, epochs * niter, warm * niter, base, final, warmup_lr=start) for s in range(epochs * niter)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert lr_at(epochs * niter + 5, epochs * niter, warm * niter, base, final) == final     # past the end


def test_lr_schedule_and_scaling():
    assert scaled_lr(0.05, 8, 2, 4) == pytest.approx(0.05 * 64 / 256)
    base, total, warm = 1.0, 100, 10
    assert lr_at(0, total, warm, base) == 0.0 and lr_at(0, total, warm, base, warmup_lr=0.2) == 0.2
    assert lr_at(9, total, warm, base) == pytest.approx(1.0) and lr_at(3, total, warm, base) == pytest.approx(1 / 3)
    for s in (10, 40, 99):
        assert lr_at(s, total, warm, base, 0.1) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * (s - 10) / 90)))
    # a time budget floors the cosine's progress: half spent right after warm-up -> the midpoint
    assert lr_at(10, total, warm, base, 0.1, min_progress=0.5) == pytest.approx(0.55)
    assert lr_at(10, total, warm, base, 0.1, min_progress=2.0) == pytest.approx(0.1)


def test_trainer_follows_the_schedule_with_scaled_warmup_and_min_lr(tmp_path):
    """The lr logged at every step is the authors' schedule of lr, min_lr and warmup_lr, each scaled by 4 / 256."""
    cfg = tiny_cfg(tmp_path, optim={"epochs": 3, "warmup_epochs": 1, "lr": 2.56, "min_lr": 0.64, "warmup_lr": 0.256})
    train(cfg, datasets={"train": TensorVideos(12)})
    logged = [r["lr"] for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
              if r.get("kind") == "train" and "lr" in r]
    want = authors_cosine_scheduler(0.04, 0.01, 3, 3, 1, 0.004)      # 12 clips / batch 4 = 3 steps per epoch
    np.testing.assert_allclose(logged, want, rtol=1e-9)


def test_optimizer_only_trainable():
    from aptune import create_model
    m = create_model("tiny", num_classes=3, method="apt", num_prompts=2)
    opt = build_optimizer(m, tiny_cfg(Path("/tmp")).optim, 0.01)
    ids = {id(p) for g in opt.param_groups for p in g["params"]}
    assert ids == {id(p) for p in m.parameters() if p.requires_grad}


def data(n_train=24, **kw):
    return {"train": TensorVideos(n_train, **kw), "val": TensorVideos(12, mode="val"),
            "test": TensorVideos(5, mode="test", views=2)}


def test_train_run_learns_and_writes_run_folder(tmp_path):
    # lr 2 (per 256): at 1 the 18 steps reached exactly the 75% bar, with the authors' warm-up (from 0) 66.7%
    cfg = tiny_cfg(tmp_path, optim={"epochs": 3, "lr": 2.0}, data={"num_sample": 2})
    out = train(cfg, datasets=data(num_sample=2))
    run = tmp_path / "run"
    assert out["val"]["top1"] >= 75.0          # 3 separable classes, chance is 33%
    for f in ("config.yaml", "metrics.jsonl", "adapter/adapter.json", "best/adapter.safetensors",
              "eval/metrics.json", "eval/confusion.png"):
        assert (run / f).exists(), f
    assert out["test"]["num_videos"] == 5 and out["test"]["num_views"] == 10
    # the saved adapter rebuilds the trained model: trained on a random init (no model.checkpoint), it says
    # so and rebuilds that init from the recorded seed only when asked
    from aptune import load_adapter
    with pytest.raises(FileNotFoundError, match=r"random backbone \(seed 0\).*allow_random_backbone"):
        load_adapter(run / "adapter")
    torch.randn(3)                                  # the rebuild does not depend on the global RNG
    m2 = load_adapter(run / "adapter", allow_random_backbone=True)
    x = torch.randn(2, 3, 4, 32, 32)
    model = out["model"].eval()
    torch.testing.assert_close(m2.eval()(x), model(x))
    assert m2.class_names == ["class_0", "class_1", "class_2"]
    # step records: one per step (log_every_steps=1), 24 videos / batch 4 = 6 steps x 3 epochs
    from aptune.engine.logging import read_metrics
    recs = read_metrics(run)
    assert [r["step"] for r in recs if r["kind"] == "train"] == list(range(1, 19))
    assert len([r for r in recs if r["kind"] == "epoch"]) == 3
    # kept checkpoints: keep_last=2
    assert [p.name for p in state.list_checkpoints(run / "checkpoints")] == ["step_00000012.pt", "step_00000018.pt"]


def test_fresh_run_refuses_folder_with_checkpoints(tmp_path):
    cfg = tiny_cfg(tmp_path, optim={"epochs": 1}, eval={"test_at_end": False})
    train(cfg, datasets={"train": TensorVideos(8)})
    with pytest.raises(ValueError, match="output.dir"):
        train(tiny_cfg(tmp_path, optim={"epochs": 1}), datasets={"train": TensorVideos(8)})


class NaNInEpoch(TensorVideos):
    def __getitem__(self, i):
        x, y, i = super().__getitem__(i)
        return (x * float("nan") if self.epoch == 1 else x), y, i


def test_non_finite_loss_stops_and_keeps_checkpoint(tmp_path):
    cfg = tiny_cfg(tmp_path, optim={"epochs": 2})
    with pytest.raises(NonFiniteLossError, match=r"at step 7 \(epoch 2\).*step_00000006.pt"):
        train(cfg, datasets={"train": NaNInEpoch(24), "val": TensorVideos(6, mode="val")})
    ckpts = state.list_checkpoints(tmp_path / "run" / "checkpoints")
    assert [p.name for p in ckpts] == ["step_00000006.pt"]
    payload = state.load_checkpoint_file(ckpts[0])
    assert all(torch.isfinite(t).all() for t in payload["model"].values())


def test_interrupted_checkpoint_write_keeps_previous(tmp_path, monkeypatch, capsys):
    d = tmp_path / "ck"
    state.save_checkpoint(d / "step_00000001.pt", {"w": torch.ones(3), "global_step": 1})
    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        with open(f, "r+b") as fh:        # half-written file, then the process "dies"
            fh.truncate(10)
        raise KeyboardInterrupt

    monkeypatch.setattr(state.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        state.save_checkpoint(d / "step_00000002.pt", {"w": torch.zeros(3), "global_step": 2})
    monkeypatch.undo()
    assert [p.name for p in d.iterdir()] == ["step_00000001.pt"]     # no temp file left, old one intact
    path, payload = state.latest_checkpoint(d)
    assert payload["global_step"] == 1 and torch.equal(payload["w"], torch.ones(3))
    # a corrupt newest file (e.g. a disk error) is skipped as well, and the skip is named with why
    (d / "step_00000003.pt").write_bytes(b"garbage")
    capsys.readouterr()
    assert state.latest_checkpoint(d)[1]["global_step"] == 1
    err = capsys.readouterr().err
    assert "skipping unreadable checkpoint" in err and "step_00000003.pt" in err and "not a readable" in err


def test_linear_probe_cache_matches_uncached(tmp_path):
    sections = dict(optim={"epochs": 2, "lr": 4.0}, model={"head_dropout": 0.0})
    plain = train(tiny_cfg(tmp_path / "a", method="linear", **sections), datasets=data())
    cached = train(tiny_cfg(tmp_path / "b", method="linear", runtime={"cache_features": True, "cache_views": 2},
                            **sections), datasets=data())
    assert cached["val"]["top1"] == plain["val"]["top1"]
    assert cached["test"]["video_top1"] == plain["test"]["video_top1"]
    a, b = plain["model"].state_dict(), cached["model"].state_dict()
    for k in ("head.weight", "head.bias", "fc_norm.weight", "fc_norm.bias"):
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    assert not torch.equal(a["head.weight"], tiny_cfg_initial_head())


def tiny_cfg_initial_head():
    torch.manual_seed(0)
    from aptune import create_model
    return create_model("tiny", num_classes=3, method="linear").head.weight.detach()


def test_accumulation_and_grad_checkpointing_match_plain_batch(tmp_path):
    """batch 4 == 2 micro-batches of 2 (accum_steps=2) == batch 4 with gradient checkpointing."""
    runs = {"plain": {}, "accum": {"optim": {"batch_size": 2, "accum_steps": 2}},
            "ckpt": {"runtime": {"grad_checkpointing": True}}}
    weights = {}
    for name, sec in runs.items():
        sections = {"optim": {"epochs": 1, "batch_size": 4, **sec.get("optim", {})}, "eval": {"test_at_end": False},
                    "runtime": sec.get("runtime", {})}
        out = train(tiny_cfg(tmp_path / name, **sections), datasets={"train": TensorVideos(8)})
        assert out["global_step"] == 2
        weights[name] = {k: v.clone() for k, v in out["model"].named_parameters() if v.requires_grad}
    for name in ("accum", "ckpt"):
        for k, v in weights["plain"].items():
            torch.testing.assert_close(weights[name][k], v, rtol=1e-5, atol=1e-6, msg=f"{name}: {k}")


def test_train_leaves_the_callers_config_alone(tmp_path):
    """train() resolves optim.total_batch into the run's batch_size (8 clips / (2 x accum 2) = 2 steps) in its
    own copy: the caller's Config is unchanged, and the run folder's config.yaml holds the resolved one."""
    import yaml
    cfg = tiny_cfg(tmp_path, optim={"epochs": 1, "batch_size": 8, "total_batch": 4, "accum_steps": 2},
                   eval={"test_at_end": False})
    before = cfg.to_dict()
    out = train(cfg, datasets={"train": TensorVideos(8)})
    assert out["global_step"] == 2
    assert cfg.to_dict() == before and cfg.optim.batch_size == 8
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["optim"]["batch_size"] == 2


def test_resume_auto_and_missing_resume(tmp_path):
    cfg = tiny_cfg(tmp_path, optim={"epochs": 1}, eval={"test_at_end": False})
    with pytest.raises(FileNotFoundError, match="no loadable checkpoint"):
        train(cfg, datasets={"train": TensorVideos(8)}, resume=True)
    first = train(cfg, datasets={"train": TensorVideos(8)}, resume="auto")        # nothing to resume: fresh
    again = train(tiny_cfg(tmp_path, optim={"epochs": 1}, eval={"test_at_end": False}),
                  datasets={"train": TensorVideos(8)}, resume="auto")             # already finished
    assert first["global_step"] == again["global_step"] == 2
    for (k, a), b in zip(first["model"].named_parameters(), again["model"].parameters()):
        assert torch.equal(a, b), k


def test_bad_videos_fail_with_path_or_are_skipped_and_counted(tmp_path):
    from aptune.config import load_config

    from engine_data import make_video_lists, write_video_config
    lists = make_video_lists(tmp_path / "data", n_train=4, n_val=2, n_test=2)
    (Path(lists["root"]) / "broken.mp4").write_bytes(b"")
    for split in ("train", "test"):
        with open(lists[split], "a") as f:
            f.write("broken.mp4 1\n")
    cfg = write_video_config(tmp_path / "c.yaml", lists, tmp_path / "run", optim={"epochs": 1, "batch_size": 5})
    with pytest.raises(ValueError, match="broken.mp4"):
        train(load_config(cfg, ["data.skip_bad_videos=false"]))
    with pytest.raises(ValueError, match="data.max_bad_fraction=0.1.*broken.mp4"):   # 1 of 5 is over 10%
        train(load_config(cfg))
    out = train(load_config(cfg, ["data.max_bad_fraction=0.5", "output.dir=" + str(tmp_path / "run2")]))
    from aptune.engine.logging import read_metrics
    epoch = next(r for r in read_metrics(tmp_path / "run2") if r["kind"] == "epoch")
    assert epoch["skipped_videos"] == 1 and out["global_step"] == 1
    assert out["test"]["skipped_videos"] == 1 and out["test"]["num_videos"] == 2
