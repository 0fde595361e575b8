"""How fast does a backbone learn the demo's motion classes? Supervised training from clips rendered
in memory (no files), printing the running training loss and test accuracy every 100 steps.

    python benchmarks/demo_learnability.py --task pair --fresh                  # ViT from scratch, 5 motion pairs
    python benchmarks/demo_learnability.py --task pair --fresh --arch cnn3d     # the same, a small 3D CNN
    python benchmarks/demo_learnability.py --task pair --fresh --head-init-scale 1 --no-fc-norm --lr 1e-3
    python benchmarks/demo_learnability.py --task classes --checkpoint aptune/assets/videomae-demo.pth

Tasks: `classes` (the 10 demo classes), `pair` (which of the 5 motion pairs; partly visible in single
frames: two objects for meeting/parting, size change for growing/shrinking), `lr` (moving right vs
left: frame order only). --fresh renders new training clips every step (no over-fitting possible).
Measured numbers are in docs/PRETRAIN.md.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aptune  # noqa: E402
from aptune.data.synthetic import labeled_clip  # noqa: E402
from aptune.demo import DemoConfig, demo_synth_config  # noqa: E402
from aptune.models.zoo import get_config  # noqa: E402
from benchmarks.pretrain_probe import to_input  # noqa: E402

TASKS = {"classes": (10, lambda y: y), "pair": (5, lambda y: y // 2), "lr": (2, lambda y: y if y < 2 else None)}


def batch(seed: int, split: str, start: int, n: int, task: str, cfg) -> tuple[np.ndarray, list[int], int]:
    """n clips whose label is defined for `task`, from item `start` on; returns (clips, labels, next item)."""
    relabel = TASKS[task][1]
    xs, ys, i = [], [], start
    while len(xs) < n:
        clip, y = labeled_clip(seed, split, i, cfg)
        i += 1
        if relabel(y) is not None:
            xs.append(clip)
            ys.append(relabel(y))
    return np.stack(xs), ys, i


def cnn3d(num_classes: int) -> nn.Module:
    """A small 3D CNN: the reference for how learnable a task is with a convolutional prior."""
    return nn.Sequential(nn.Conv3d(3, 32, (2, 5, 5), padding=(0, 2, 2)), nn.GELU(), nn.MaxPool3d((1, 2, 2)),
                         nn.Conv3d(32, 64, (2, 3, 3), padding=(0, 1, 1)), nn.GELU(), nn.MaxPool3d((1, 2, 2)),
                         nn.Conv3d(64, 64, (2, 3, 3), padding=(0, 1, 1)), nn.GELU(),
                         nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(64, num_classes))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=sorted(TASKS), default="classes")
    p.add_argument("--arch", choices=["vit", "cnn3d"], default="vit")
    p.add_argument("--model", default="videomae-demo")
    p.add_argument("--checkpoint", default=None, help="start from these weights (default: random init)")
    p.add_argument("--head-init-scale", type=float, default=None, help="VideoMAEConfig.init_scale (VideoMAE: 0.001)")
    p.add_argument("--no-fc-norm", action="store_true", help="drop the LayerNorm on the pooled features")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--train", type=int, default=300, help="training clips (without --fresh)")
    p.add_argument("--fresh", action="store_true", help="new training clips every step")
    p.add_argument("--test", type=int, default=200)
    args = p.parse_args()
    torch.manual_seed(0)
    demo = DemoConfig()
    cfg = demo_synth_config(demo)
    k = TASKS[args.task][0]
    over = {"num_classes": k}
    if args.head_init_scale is not None:
        over["init_scale"] = args.head_init_scale
    vit = get_config(args.model, **over)
    if args.arch == "cnn3d":
        model = cnn3d(k)
    else:
        model = aptune.create_model(vit, checkpoint=args.checkpoint)
        if args.no_fc_norm:
            model.fc_norm = nn.Identity()
    frames, stride = vit.num_frames, demo.sampling_rate
    xte, yte, _ = batch(0, "test", 0, args.test, args.task, cfg)
    xte, yte = to_input(xte, frames, stride, "cpu"), torch.tensor(yte)
    if not args.fresh:
        xtr, ytr, _ = batch(0, "train", 0, args.train, args.task, cfg)
        xtr, ytr = to_input(xtr, frames, stride, "cpu"), torch.tensor(ytr)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    t0, item, losses = time.time(), 0, []
    print(f"{args.arch} on task {args.task!r} ({k} classes, chance {100 / k:.0f}%)", flush=True)
    for step in range(1, args.steps + 1):
        if args.fresh:
            x, y, item = batch(7, "train", item, args.batch_size, args.task, cfg)
            x, y = to_input(x, frames, stride, "cpu"), torch.tensor(y)
        else:
            idx = torch.randint(0, len(xtr), (args.batch_size,))
            x, y = xtr[idx], ytr[idx]
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, step / 50)                        # 50 warm-up steps
        model.train()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 100 == 0:
            model.eval()
            with torch.no_grad():
                test = (model(xte).argmax(1) == yte).float().mean().item()
            print(f"step {step}: train loss {np.mean(losses[-100:]):.3f} (chance {np.log(k):.3f})  "
                  f"test top-1 {100 * test:.1f}  ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
