"""Kill a real `aptune train` process after an optimizer step, resume it, and compare the final
weights with an uninterrupted run: they must be bitwise equal on CPU."""
import sys
from pathlib import Path

import torch

from aptune.engine.state import latest_checkpoint, list_checkpoints

from engine_data import make_video_lists, run_process, write_video_config

KILL_AT_STEP = str(Path(__file__).with_name("kill_at_step.py"))


def aptune(*args, kill_at: int | None = None):
    """`aptune ARGS` in a subprocess; kill_at: dies (exit 1) right after that optimizer step."""
    head = [sys.executable, "-m", "aptune"] if kill_at is None else [sys.executable, KILL_AT_STEP, str(kill_at)]
    return run_process([*head, *args])


def final_weights(run_dir):
    return latest_checkpoint(run_dir / "checkpoints")[1]["model"]


def test_killed_run_resumes_to_identical_weights(tmp_path):
    lists = make_video_lists(tmp_path / "data", n_train=8, n_val=2, n_test=0)
    # 8 videos / batch 2 = 4 steps per epoch, 2 epochs; prompt dropout 0.1 and random augmentation on
    # (crop, flip and the authors' RandAugment, finished on the device after collation),
    # a checkpoint every 3 steps and at each epoch end (4): killed after step 7, the resume restarts
    # from step 6 (mid-epoch 2) and redoes step 7
    opts = dict(output={"save_every_steps": 3, "keep_last": 5}, data={"test_list": None, "num_sample": 2,
                                                                      "rand_augment": True})
    ref = tmp_path / "ref"
    cut = tmp_path / "cut"
    r = aptune("train", write_video_config(tmp_path / "ref.yaml", lists, ref, **opts))
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = write_video_config(tmp_path / "cut.yaml", lists, cut, **opts)
    r = aptune("train", cfg, kill_at=7)
    assert r.returncode == 1
    assert [p.name for p in list_checkpoints(cut / "checkpoints")] == [f"step_0000000{i}.pt" for i in (3, 4, 6)]
    r = aptune("train", cfg, "--resume")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resumed from" in r.stdout
    a, b = final_weights(ref), final_weights(cut)
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the resumed run's metrics have one record per step, no duplicates from the killed run
    from aptune.engine.logging import read_metrics
    steps = [rec["step"] for rec in read_metrics(cut) if rec["kind"] == "train"]
    assert steps == list(range(1, 9))
    ref_loss = [rec["loss"] for rec in read_metrics(ref) if rec["kind"] == "train"]
    cut_loss = [rec["loss"] for rec in read_metrics(cut) if rec["kind"] == "train"]
    assert ref_loss == cut_loss
