"""Is a pre-trained demo backbone worth having? Linear probes on the demo task, pre-trained
against a random-init backbone of the same shape: the measurement issue 5's acceptance asks for.

    python benchmarks/pretrain_probe.py --checkpoint aptune/assets/videomae-demo.pth
    python benchmarks/pretrain_probe.py --checkpoint aptune/assets/videomae-demo.pth \
        --sizes 2000,300,1000 --random-seeds 0,1,2,3        # the numbers in docs/PRETRAIN.md
    python benchmarks/pretrain_probe.py --minutes 4 --mask-ratio 0.9 --norm-pix-eps 0.01
    python benchmarks/pretrain_probe.py --minutes 25 --no-norm-pix --probe-every 5 --device cuda

With --minutes, `aptune.pretrain.pretrain` (the code behind `aptune pretrain`) runs on unlabeled
clips rendered in memory (seed 1000, the demo's look) and the probe is repeated every
--probe-every minutes, so the curve "probe top-1 against pre-training time" comes out of one run.

The probe: L-BFGS multinomial logistic regression on standardised features of 300 labeled train
clips (seed 0; weight decay chosen on 100 val clips), top-1 on 200 test clips; 10 classes, chance
10 %. Two poolings of the final tokens: the mean over all tokens (what VideoMAE's head sees) and
the mean per time step (4 x C features, which keeps the order of time).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aptune  # noqa: E402
from aptune.config import Config  # noqa: E402
from aptune.data.synthetic import labeled_clip, unlabeled_clip  # noqa: E402
from aptune.data.transforms import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from aptune.demo import DemoConfig, demo_synth_config  # noqa: E402
from aptune.models.zoo import get_config  # noqa: E402
from aptune.pretrain import pretrain  # noqa: E402


def labeled(split: str, n: int, cfg) -> tuple[np.ndarray, np.ndarray]:
    pairs = [labeled_clip(0, split, i, cfg) for i in range(n)]
    return np.stack([c for c, _ in pairs]), np.array([y for _, y in pairs])


def to_input(clips: np.ndarray, frames: int, stride: int, device) -> torch.Tensor:
    """(n, T, H, W, 3) uint8 -> normalised (n, 3, frames, H, W), frames 0, stride, 2*stride, ..."""
    x = torch.from_numpy(clips[:, 0:frames * stride:stride]).to(device).permute(0, 4, 1, 2, 3).float() / 255
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def features(model, clips: np.ndarray, stride: int, device) -> dict[str, torch.Tensor]:
    model.eval().to(device)
    c = model.config
    mean, per_time = [], []
    for i in range(0, len(clips), 64):
        x = to_input(clips[i:i + 64], c.num_frames, stride, device)
        tok = model.forward_features(x)[0].float().cpu()                 # (b, N, C)
        b, N, C = tok.shape
        mean.append(tok.mean(1))
        per_time.append(tok.reshape(b, c.num_frames // c.tubelet_size, -1, C).mean(2).flatten(1))  # (b, T'*C)
    return {"mean": torch.cat(mean), "per-time": torch.cat(per_time)}


def probe(tr, ytr, va, yva, te, yte, wds=(1e-4, 1e-3, 1e-2)) -> float:
    """Test top-1 of the logistic regression whose weight decay scores best on val."""
    mu, sd = tr.mean(0), tr.std(0) + 1e-6
    tr, va, te = (tr - mu) / sd, (va - mu) / sd, (te - mu) / sd
    k = int(ytr.max()) + 1
    best = (-1.0, 0.0)
    for wd in wds:
        W = torch.zeros(tr.shape[1], k, requires_grad=True)
        b = torch.zeros(k, requires_grad=True)
        opt = torch.optim.LBFGS([W, b], max_iter=300, line_search_fn="strong_wolfe")
        y = torch.as_tensor(ytr)

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(tr @ W + b, y) + wd * (W ** 2).sum()
            loss.backward()
            return loss
        opt.step(closure)
        with torch.no_grad():
            acc = lambda x, yy: ((x @ W + b).argmax(1) == torch.as_tensor(yy)).float().mean().item()  # noqa: E731
            best = max(best, (acc(va, yva), acc(te, yte)))
    return 100 * best[1]


def probe_model(model, data, stride: int, device) -> dict[str, float]:
    feats = {s: features(model, x, stride, device) for s, (x, _) in data.items()}
    return {pool: probe(feats["train"][pool], data["train"][1], feats["val"][pool], data["val"][1],
                        feats["test"][pool], data["test"][1]) for pool in ("mean", "per-time")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="videomae-demo")
    p.add_argument("--checkpoint", default=None, help="probe these pre-trained weights (no pre-training here)")
    p.add_argument("--minutes", type=float, default=0.0, help="pre-train in memory for this long, then probe")
    p.add_argument("--probe-every", type=float, default=0.0, help="also probe every this many minutes")
    p.add_argument("--pool", type=int, default=2000, help="unlabeled clips rendered for pre-training")
    p.add_argument("--mask-ratio", type=float, default=0.9)
    p.add_argument("--no-norm-pix", action="store_true")
    p.add_argument("--norm-pix-eps", type=float, default=1e-6)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--decoder-depth", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--sizes", default="300,100,200", help="labeled train,val,test clips for the probe")
    p.add_argument("--random-seeds", default="0", help="comma-separated seeds: one random-init row each")
    args = p.parse_args()
    demo = DemoConfig()
    cfg = demo_synth_config(demo)
    device = torch.device(args.device)
    t0 = time.time()
    n_tr, n_va, n_te = (int(v) for v in args.sizes.split(","))
    data = {"train": labeled("train", n_tr, cfg), "val": labeled("val", n_va, cfg), "test": labeled("test", n_te, cfg)}
    rows = []
    for seed in (int(v) for v in args.random_seeds.split(",")):
        torch.manual_seed(seed)
        rows.append((f"random init (seed {seed})", 0.0, probe_model(aptune.create_model(args.model, num_classes=0),
                                                                     data, demo.sampling_rate, device)))
        print(f"{rows[-1][0]}: {rows[-1][2]}  ({time.time() - t0:.0f} s)", flush=True)
    if args.checkpoint:
        m = aptune.create_model(args.model, num_classes=0, checkpoint=args.checkpoint)
        rows.append((os.path.basename(args.checkpoint), 0.0, probe_model(m, data, demo.sampling_rate, device)))
    if args.minutes > 0:
        pool = [unlabeled_clip(1000, i, cfg) for i in range(args.pool)]
        out = Path(tempfile.mkdtemp()) / "pretrain.pth"
        vit = get_config(args.model)
        pc = Config.from_dict({
            "model": {"name": args.model}, "data": {"num_frames": vit.num_frames, "img_size": vit.img_size,
                                                    "sampling_rate": 2, "num_workers": 0},
            "optim": {"epochs": 100000, "batch_size": args.batch_size, "lr": args.lr * 256 / args.batch_size,
                      "min_lr": 1e-5 * 256 / args.batch_size, "warmup_epochs": 1, "weight_decay": 0.05,
                      "betas": [0.9, 0.95], "clip_grad": 1.0},
            "runtime": {"device": args.device},
            "pretrain": {"mask_ratio": args.mask_ratio, "decoder_depth": args.decoder_depth,
                         "norm_pix_loss": not args.no_norm_pix, "norm_pix_eps": args.norm_pix_eps,
                         "max_minutes": args.minutes, "out": str(out)}})
        t_pre, last = time.time(), [time.time()]

        def log(line: str) -> None:          # called after each epoch; the file on disk is the previous epoch's
            print(line, flush=True)
            if args.probe_every > 0 and time.time() - last[0] > 60 * args.probe_every and out.exists():
                m = aptune.create_model(args.model, num_classes=0, checkpoint=str(out))
                rows.append((f"pre-trained {(time.time() - t_pre) / 60:.1f} min", 0.0,
                             probe_model(m, data, demo.sampling_rate, device)))
                print(f"  probe: {rows[-1][2]}", flush=True)
                last[0] = time.time()
        res = pretrain(pc, pool, progress=False, log=log)
        m = aptune.create_model(args.model, num_classes=0, checkpoint=str(out))
        rows.append((f"pre-trained {res['seconds'] / 60:.1f} min ({res['steps']} steps)", 0.0,
                     probe_model(m, data, demo.sampling_rate, device)))
    print("\n| backbone | probe top-1, mean pool | probe top-1, per-time pool |\n|---|---:|---:|")
    for name, _, r in rows:
        print(f"| {name} | {r['mean']:.1f} | {r['per-time']:.1f} |")


if __name__ == "__main__":
    main()
