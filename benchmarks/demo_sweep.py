"""Choose each demo row's learning rate (and weight decay) on the VALIDATION split only.

    python benchmarks/demo_sweep.py                          # every row of the demo, its default grid
    python benchmarks/demo_sweep.py --rows "APT (16),Full fine-tuning" --out docs/demo_sweep.md

Each setting trains the row exactly as `aptune demo` does (same clips, epochs, batch size, schedule,
backbone), but the test split is never built: the engine gets train and val only, and the score is
the val top-1 (one centre clip per video) after the last epoch. The grid is centred on the row's
current value (see `grid`). It prints a table
of every setting and the best per row; put the chosen values into `aptune.demo.default_rows` (the
recorded run is in docs/DEMO.md). Numbers are printed, never asserted.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aptune.demo import DemoConfig, _row_dir, demo_checkpoint, demo_datasets, extra_rows, train_row  # noqa: E402

# The lr (per batch of 32) each row's grid is centred on: the values the rows had before the recorded
# sweep (docs/DEMO.md), so that this script reproduces that sweep after its choices went into the demo.
CENTRES = {"Linear probing": (9e-3, 1e-4), "Linear probing (random init)": (1e-3, 1e-4),
           "VPT-deep (32)": (9e-3, 1e-4), "AdaptFormer (16)": (9e-3, 1e-4), "LoRA (8)": (3e-3, 1e-4),
           "Approx. prompt (16)": (9e-3, 1e-4), "APT (16)": (9e-3, 1e-4), "APT (64)": (9e-3, 1e-4),
           "Full fine-tuning": (5e-4, 0.05)}


def grid(row) -> list[tuple[float, float]]:
    """(lr, weight decay) settings for a row, centred on CENTRES (else on the row's own values). Linear
    probing (cheap, on cached features): lr x 1/3, 1, 3 at weight decay x 1 and x 100. Parameter-efficient
    rows: lr x 1/3, 1, 3 (an earlier two-point sweep and probes at x 9 placed their best inside this range,
    docs/DEMO.md); full fine-tuning: lr x 1/2 and x 1 (its 10 epochs cost 3 minutes a setting)."""
    lr, wd = CENTRES.get(row.label, (row.lr, row.weight_decay))
    if row.method == "linear":
        return [(x, w) for w in (wd, wd * 100) for x in (lr / 3, lr, lr * 3)]
    lrs = [lr / 2, lr] if row.method == "full" else [lr / 3, lr, lr * 3]
    return [(x, wd) for x in lrs]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help="also write the markdown table here")
    p.add_argument("--work", default="demo_sweep_out", help="data cache and runs")
    p.add_argument("--rows", default=None, help="comma-separated row labels (default: all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=None,
                   help="epochs of the parameter-efficient rows (default: the demo's, DemoConfig.epochs)")
    p.add_argument("--quick", action="store_true", help="the demo's --quick setting (a smoke run of this script)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = DemoConfig.quick(args.work) if args.quick else DemoConfig(out=args.work)
    if args.epochs is not None:
        if args.epochs < 1:
            raise SystemExit(f"--epochs must be at least 1, got {args.epochs}")
        cfg = replace(cfg, epochs=args.epochs)
    rows = cfg.rows + extra_rows()                     # the rows the default table leaves out too
    if args.rows:
        want = [r.strip() for r in args.rows.split(",")]
        unknown = set(want) - {r.label for r in rows}
        if unknown:
            raise SystemExit(f"--rows: {sorted(unknown)} are not demo rows; they are {[r.label for r in rows]}")
        rows = [r for r in rows if r.label in want]
    sets = demo_datasets(cfg, splits=("train", "val"))              # the test split is never even rendered
    ckpt = str(cfg.checkpoint or demo_checkpoint())
    lines = ["| Row | lr (per batch of %d) | weight decay | epochs | val top-1 | seconds |" % cfg.batch_size,
             "|---|---:|---:|---:|---:|---:|"]
    best = {}
    t_all = time.time()
    for row in rows:
        for lr, wd in grid(row):
            trial = replace(row, lr=lr, weight_decay=wd)
            res, rc, seconds = train_row(cfg, trial, sets, _row_dir(Path(args.work), trial), ckpt, test=False)
            val = res["val"]["top1"]
            lines.append(f"| {row.label} | {lr:.2e} | {wd:g} | {rc.optim.epochs} | {val:.1f} | {seconds:.0f} |")
            print(lines[-1], flush=True)
            if row.label not in best or val > best[row.label][2]:
                best[row.label] = (lr, wd, val)
    lines += ["", "| Row | chosen lr | chosen weight decay | val top-1 |", "|---|---:|---:|---:|"]
    lines += [f"| {k} | {lr:.2e} | {wd:g} | {v:.1f} |" for k, (lr, wd, v) in best.items()]
    lines.insert(0, f"Val top-1 on {cfg.num_val} val videos (one centre clip each); {cfg.num_train} train videos, "
                    f"batch {cfg.batch_size}, backbone `{cfg.model}` ({ckpt}); "
                    f"torch threads {torch.get_num_threads()}; "
                    f"{(time.time() - t_all) / 60:.1f} min.\n")
    table = "\n".join(lines)
    print("\n" + table + f"\n\nsweep finished in {(time.time() - t_all) / 60:.1f} min")
    if args.out:
        Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
