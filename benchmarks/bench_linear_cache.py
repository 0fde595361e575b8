"""Linear probing with and without the feature cache: wall time per epoch.

    .venv/bin/python benchmarks/bench_linear_cache.py [--videos 48] [--epochs 4] [--model tiny]

Trains the same linear probe twice on tiny real mp4 files (tests/videos.py): once decoding and
running the frozen backbone every epoch, once on cached pooled tokens (runtime.cache_features).
Prints per-epoch seconds from each run's metrics.jsonl and the ratio later-epoch / first-epoch
(the cached run's first epoch includes the feature extraction, logged separately).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=48)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--size", type=int, default=32)
    a = ap.parse_args()
    import torch

    from aptune.config import load_config
    from aptune.engine.train import train

    from engine_data import make_video_lists, write_video_config
    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp(prefix="bench_cache_"))
    lists = make_video_lists(tmp / "data", n_train=a.videos, n_val=8, n_test=0, num_classes=4)
    results = {}
    for name, cache in (("uncached", False), ("cached", True)):
        cfg_path = write_video_config(
            tmp / f"{name}.yaml", lists, tmp / name, model={"name": a.model, "random_init": True},
            method={"name": "linear"},
            data={"test_list": None, "num_frames": a.frames, "img_size": a.size},
            optim={"epochs": a.epochs, "batch_size": 8, "warmup_epochs": 1},
            runtime={"cache_features": cache, "cache_views": 1, "log_every_steps": 1000})
        t0 = time.time()
        train(load_config(cfg_path))
        total = time.time() - t0
        recs = [json.loads(ln) for ln in (tmp / name / "metrics.jsonl").read_text().splitlines()]
        epochs = [r["epoch_time_s"] for r in recs if r["kind"] == "epoch"]
        feats = sum(r["seconds"] for r in recs if r["kind"] == "features")
        results[name] = (total, epochs, feats)
    print(f"{a.videos} videos, model {a.model}, {a.frames}x{a.size}px, {a.epochs} epochs (seconds)")
    for name, (total, epochs, feats) in results.items():
        print(f"{name:9s} total {total:7.2f}  feature extraction {feats:6.2f}  epochs "
              + " ".join(f"{e:6.3f}" for e in epochs))
    unc, cac = results["uncached"], results["cached"]
    first = cac[2] + cac[1][0]
    later = sum(cac[1][1:]) / max(len(cac[1]) - 1, 1)
    unc_mean = sum(unc[1]) / len(unc[1])
    print(f"cached: first epoch (extraction + training) {first:.3f}s, later epochs {later:.4f}s "
          f"= {later / first:.4f} of the first; uncached epoch mean {unc_mean:.3f}s")


if __name__ == "__main__":
    main()
