"""`aptune train CONFIG [section.key=value ...] [--resume]`

Ctrl-C stops the run (exit 130) and says which checkpoint survived and how to resume from it.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..config import load_config
from ..engine.state import CKPT_RE, list_checkpoints
from ..engine.train import NonFiniteLossError
from ..workflows import train

HELP = "fine-tune a model as configured by a YAML file (torchrun-aware; resumable)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML config (see configs/), e.g. configs/ucf101/vit_b_apt200.yaml")
    p.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE",
                   help="dotted overrides parsed as YAML, e.g. optim.lr=0.05 method.num_prompts=400 "
                        "output.dir=runs/x; resume=auto continues a run if it has a checkpoint")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest loadable checkpoint in output.dir (error if none)")
    p.add_argument("--output", metavar="DIR", help="run folder (same as output.dir=DIR)")
    p.add_argument("--random-backbone", action="store_true",
                   help="train on a randomly initialised backbone when model.checkpoint is not set (same as "
                        "model.random_init=true); without it such a run is refused, so that no long run starts on "
                        "random weights by accident")


def run(args: argparse.Namespace) -> int:
    overrides, resume = [], bool(args.resume)
    for item in args.overrides:
        if item.replace(" ", "") in ("resume=auto", "resume=true", "resume=True"):
            resume = "auto" if item.endswith("auto") else True
        else:
            overrides.append(item)
    if args.output:
        overrides.append(f"output.dir={args.output}")
    if args.random_backbone:
        overrides.append("model.random_init=true")
    cfg = load_config(args.config, overrides)
    try:
        out = train(cfg, resume=resume)
    except NonFiniteLossError as e:
        print(f"aptune: error: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        if os.environ.get("RANK", "0") == "0":
            print(f"aptune: interrupted; {interrupted_note(Path(cfg.output.dir))}", file=sys.stderr)
        return 130
    if os.environ.get("RANK", "0") == "0":
        print(f"aptune: run folder {out.run_dir}; adapter {out.adapter_dir}")
    return 0


def interrupted_note(run_dir: Path) -> str:
    """Which checkpoint survived an interrupted run, and the command that resumes from it (the newest
    snapshot's name: snapshots are written atomically, so a listed one is complete)."""
    snaps = list_checkpoints(run_dir / "checkpoints")
    if not snaps:
        return f"no checkpoint was written yet in {run_dir}: a new run starts from step 0"
    step = int(CKPT_RE.match(snaps[-1].name).group(1))
    return (f"the newest checkpoint is {snaps[-1]} (step {step}); the steps after it are lost. Resume: "
            f"aptune train {run_dir / 'config.yaml'} --resume")
