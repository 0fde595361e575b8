"""Pre-train the demo's backbone (aptune/assets/vit-demo.pth): supervised, on frame-SHUFFLED clips.

    python benchmarks/pretrain_demo_backbone.py --out aptune/assets/vit-demo.pth      # the shipped asset

The pool is `synthetic.pool_clip` (seed 1000, the "unlabeled" split: disjoint from the demo's labeled
clips of seed 0) and the label is the motion KIND (10 kinds: horizontal / vertical translation,
rotation, scaling, meeting, diagonal drift, bounce, orbit, zoom-while-moving, still), never its
direction. Every training clip's frames are put in a random order, so the backbone learns what
moves and how (a bag of frames shows the object's spread of positions, angles and sizes) but has no
way to learn the order of time. The demo's classes are the directions of the first five kinds
(moving right vs left, ...): a linear probe on this backbone can name the kind but not the direction
(at most about half the classes), and only a method that changes what the backbone computes can
learn the order. That is the regime of the APT paper's SSv2 column (linear probing far below full
fine-tuning), made cheap: 4 frames of 32 x 32, one token per 8 x 8 patch of ONE frame (tubelet 1:
a token that spans two frames would carry their order into every frozen feature), 64 tokens,
0.84 M parameters.

Every `--eval-every` steps it prints the kind accuracy on 500 held-out pool clips (frames in order)
and a ridge-regression probe of the demo's 10 classes (1,000 train / 500 val labeled clips: never
the test split). The recipe and that history are stored in the checkpoint under "aptune".
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aptune  # noqa: E402
from aptune.data.synthetic import MOTIONS, labeled_clip, pool_clip  # noqa: E402
from aptune.data.transforms import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from aptune.demo import DemoConfig, demo_synth_config  # noqa: E402
from aptune.models.zoo import get_config  # noqa: E402


def to_input(clips: torch.Tensor, offset: torch.Tensor | int, stride: int, frames: int) -> torch.Tensor:
    """(n, T, H, W, 3) uint8 -> normalised (n, 3, frames, H, W), frames offset, offset + stride, ..."""
    idx = torch.arange(frames) * stride + (offset if isinstance(offset, int) else offset[:, None])
    if isinstance(offset, int):
        x = clips[:, idx]
    else:
        x = torch.gather(clips, 1, idx.view(-1, frames, 1, 1, 1).expand(-1, -1, *clips.shape[2:]))
    x = x.permute(0, 4, 1, 2, 3).float() / 255
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1)
    return (x - mean) / std


def shuffle_time(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each clip of (B, 3, T, H, W) with its own random frame order."""
    B, _, T = x.shape[:3]
    perm = torch.argsort(torch.rand(B, T, generator=gen), dim=1)
    return torch.gather(x, 2, perm.view(B, 1, T, 1, 1).expand_as(x))


@torch.no_grad()
def pooled(model, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Mean-pooled final tokens: what the demo's linear probe sees (this backbone has no fc_norm)."""
    model.eval()
    return torch.cat([model.forward_head(*model.forward_features(x[i:i + batch]), pre_logits=True)
                      for i in range(0, len(x), batch)])


def ridge_probe(ftr, ytr, fte, yte, k: int, lam: float = 1e-2) -> float:
    """Top-1 of a ridge-regression classifier (one-hot targets) on standardised features."""
    mu, sd = ftr.mean(0), ftr.std(0) + 1e-6
    a, b = (ftr - mu) / sd, (fte - mu) / sd
    a = torch.cat([a, torch.ones(len(a), 1)], 1)
    b = torch.cat([b, torch.ones(len(b), 1)], 1)
    w = torch.linalg.solve(a.T @ a + lam * len(a) * torch.eye(a.shape[1]), a.T @ F.one_hot(ytr, k).float())
    return 100.0 * ((b @ w).argmax(1) == yte).float().mean().item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="vit-demo.pth")
    p.add_argument("--model", default="videomae-demo-4f")
    p.add_argument("--pool", type=int, default=8000, help="pool clips rendered once into memory")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--seed", type=int, default=1000, help="pool seed (the demo's labeled clips use 0)")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    demo = DemoConfig()
    synth = demo_synth_config(demo)
    vit = get_config(args.model, num_classes=len(MOTIONS))
    stride = demo.sampling_rate
    t0 = time.time()
    pool = [pool_clip(args.seed, i, synth) for i in range(args.pool + 500)]
    clips = torch.from_numpy(np.stack([c for c, _ in pool]))
    kinds = torch.tensor([k for _, k in pool])
    xtr_u8, ytr = clips[:args.pool], kinds[:args.pool]
    xho, yho = to_input(clips[args.pool:], 0, stride, vit.num_frames), kinds[args.pool:]
    lab = {s: [labeled_clip(demo.seed, s, i, synth) for i in range(n)] for s, n in (("train", 1000), ("val", 500))}
    lab = {s: (to_input(torch.from_numpy(np.stack([c for c, _ in v])), 0, stride, vit.num_frames),
               torch.tensor([y for _, y in v])) for s, v in lab.items()}
    print(f"rendered {len(pool)} pool + 1500 labeled clips in {time.time() - t0:.0f} s", flush=True)

    model = aptune.create_model(vit)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    history, losses, t0 = [], [], time.time()

    def evaluate(step: int) -> None:
        fh = pooled(model, xho)
        kind_acc = 100.0 * (model.head(fh).argmax(1) == yho).float().mean().item()
        ftr, fva = pooled(model, lab["train"][0]), pooled(model, lab["val"][0])
        probe = ridge_probe(ftr, lab["train"][1], fva, lab["val"][1], 10)
        row = {"step": step, "loss": float(np.mean(losses[-200:])) if losses else None, "kind_top1": kind_acc,
               "probe_val_top1": probe, "seconds": time.time() - t0}
        history.append(row)
        print(f"step {step}: loss {row['loss'] or float('nan'):.3f}  kind top-1 (ordered frames) {kind_acc:.1f}  "
              f"demo-class probe (val) {probe:.1f}  ({row['seconds']:.0f} s)", flush=True)

    def save(path: str) -> None:
        state = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
        meta = {"kind": "supervised, frame-shuffled motion kinds (benchmarks/pretrain_demo_backbone.py)",
                "model": args.model, "config": get_config(args.model).to_dict(), "recipe": vars(args),
                "motions": MOTIONS, "history": history, "torch": str(torch.__version__)}
        torch.save({"model": state, "aptune": meta}, path)

    evaluate(0)
    for step in range(1, args.steps + 1):
        idx = torch.randint(0, len(xtr_u8), (args.batch_size,), generator=gen)
        # a random window of the clip (num_frames at the demo's stride), then a random frame order
        offset = torch.randint(0, clips.shape[1] - (vit.num_frames - 1) * stride, (args.batch_size,), generator=gen)
        x = shuffle_time(to_input(xtr_u8[idx], offset, stride, vit.num_frames), gen)
        lr = args.lr * min(1.0, step / args.warmup) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        model.train()
        loss = F.cross_entropy(model(x), ytr[idx])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % args.eval_every == 0 or step == args.steps:
            evaluate(step)
            save(args.out + ".partial")              # something to look at while it runs
    save(args.out)
    Path(args.out + ".partial").unlink(missing_ok=True)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 2 ** 20:.1f} MiB) after {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
