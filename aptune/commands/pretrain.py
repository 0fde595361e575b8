"""`aptune pretrain CONFIG [KEY=VALUE ...]`: VideoMAE self-supervised pre-training (tube masking, MSE on
hidden tubelets), configured like training: the `pretrain:` section plus model, data, optim, runtime.

    aptune pretrain configs/pretrain/videomae_demo.yaml data.train_list=pool/unlabeled.txt pretrain.out=demo.pth
    aptune pretrain configs/pretrain/videomae_demo.yaml --videos pool/ --out demo.pth optim.epochs=2

Any field is a dotted override (pretrain.mask_ratio=0.75, optim.lr=0.016, runtime.device=cuda); the
flags below are short forms of the common ones.
"""
from __future__ import annotations

import torch

from ..config import load_config
from ..pretrain import pretrain

HELP = "VideoMAE self-supervised pre-training of a backbone on unlabeled videos (YAML config + overrides)"


def add_arguments(p) -> None:
    p.add_argument("config", help="YAML config with a pretrain: section, e.g. configs/pretrain/videomae_demo.yaml")
    p.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE",
                   help="dotted overrides, e.g. optim.epochs=2 pretrain.mask_ratio=0.75 (accepted anywhere)")
    p.add_argument("--videos", help="list file (`path [label]` per line) or folder of videos (= data.train_list)")
    p.add_argument("--out", help="checkpoint to write, official VideoMAE pre-training layout (= pretrain.out)")
    p.add_argument("--init", metavar="CKPT", help="continue from this pre-training checkpoint (= pretrain.init)")
    p.add_argument("--max-minutes", type=float, help="stop (and save) after this much wall time "
                                                     "(= pretrain.max_minutes)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    flags = {"data.train_list": args.videos, "pretrain.out": args.out, "pretrain.init": args.init,
             "pretrain.max_minutes": args.max_minutes}
    overrides = list(args.overrides) + [f"{k}={v}" for k, v in flags.items() if v is not None]
    cfg = load_config(args.config, overrides)
    result = pretrain(cfg, progress=not args.no_progress)
    h = result["history"]
    print(f"wrote {result['out']}: {result['steps']} steps in {result['seconds'] / 60:.1f} min, "
          f"loss {h[0]['loss']:.4f} -> {h[-1]['loss']:.4f}")
    return 0
