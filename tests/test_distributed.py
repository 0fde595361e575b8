"""torchrun with 2 processes (Gloo on CPU) gives the same run as one process with the same
total batch: same per-step losses, validation and multi-view test metrics, same final weights."""
import sys

import torch

from aptune.engine.logging import read_metrics
from aptune.engine.state import latest_checkpoint

from engine_data import make_video_lists, run_process, write_video_config


def test_torchrun_two_processes_match_single_process(tmp_path):
    # 8 training videos, global batch 4 (1 x 4 or 2 x 2): 2 steps per epoch on either setup;
    # 3 val / test videos split 2 + 1 over the ranks (no padding, no duplicates)
    lists = make_video_lists(tmp_path / "data", n_train=8, n_val=3, n_test=3)
    common = dict(method={"name": "apt", "num_prompts": 4, "prompt_dropout": 0.0}, runtime={"device": "cpu"})
    single = write_video_config(tmp_path / "one.yaml", lists, tmp_path / "one", optim={"batch_size": 4}, **common)
    double = write_video_config(tmp_path / "two.yaml", lists, tmp_path / "two", optim={"batch_size": 2}, **common)
    r = run_process([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                     "-m", "aptune", "train", double])
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_process([sys.executable, "-m", "aptune", "train", single])
    assert r.returncode == 0, r.stderr[-3000:]

    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "two")
    steps = lambda recs: [(r["step"], r["loss"]) for r in recs if r["kind"] == "train"]  # noqa: E731
    assert len(steps(one)) == 4                      # 8 videos / total batch 4 x 2 epochs
    for (s1, l1), (s2, l2) in zip(steps(one), steps(two), strict=True):
        assert s1 == s2 and abs(l1 - l2) < 1e-5
    e1, e2 = [[r for r in recs if r["kind"] == k] for recs in (one, two) for k in ("epoch",)]
    for a, b in zip(e1, e2, strict=True):
        assert abs(a["val_loss"] - b["val_loss"]) < 1e-5 and a["val_top1"] == b["val_top1"]
    t1, t2 = [next(r for r in recs if r["kind"] == "test") for recs in (one, two)]
    assert t1["num_videos"] == t2["num_videos"] == 3 and t1["num_views"] == t2["num_views"] == 18
    assert t1["video_top1"] == t2["video_top1"] and t1["clip_top1"] == t2["clip_top1"]
    w1, w2 = (latest_checkpoint(tmp_path / d / "checkpoints")[1] for d in ("one", "two"))
    assert w2["world_size"] == 2 and len(w2["rng"]) == 2
    for k in w1["model"]:
        torch.testing.assert_close(w1["model"][k], w2["model"][k], rtol=1e-4, atol=1e-6)
