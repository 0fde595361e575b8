"""`aptune plot RUN_DIR`: loss, accuracy and learning-rate curves from metrics.jsonl."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..engine.logging import read_metrics
from ..errors import DataError
from ..io import pyplot

HELP = "plot loss / accuracy / lr curves of a training run into PNG files"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run folder written by `aptune train` (holds metrics.jsonl)")
    p.add_argument("--out", metavar="FILE", help="output PNG (default: RUN_DIR/curves.png)")


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Three panels (loss, top-1, lr) against the optimizer step; returns the PNG path."""
    plt = pyplot()
    recs = read_metrics(run_dir)
    train = [r for r in recs if r["kind"] == "train"]
    epochs = [r for r in recs if r["kind"] == "epoch"]
    if not train and not epochs:
        raise DataError(f"{Path(run_dir) / 'metrics.jsonl'}: no training records to plot")

    def series(rows, key):
        pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    ax.plot(*series(train, "loss"), alpha=0.5, label="train (step)")
    ax.plot(*series(epochs, "train_loss"), "o-", label="train (epoch)")
    ax.plot(*series(epochs, "val_loss"), "s-", label="val")
    ax.set_title("loss")
    ax = axes[1]
    ax.plot(*series(epochs, "train_top1"), "o-", label="train top-1")
    ax.plot(*series(epochs, "val_top1"), "s-", label="val top-1")
    ax.plot(*series(epochs, "val_top5"), "^-", label="val top-5")
    ax.set_title("accuracy (%)")
    ax = axes[2]
    ax.plot(*series(train, "lr"), label="lr")
    ax.set_title("learning rate")
    for ax in axes:
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    out = Path(out or Path(run_dir) / "curves.png")
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def run(args: argparse.Namespace) -> int:
    print(f"wrote {plot_run(args.run_dir, args.out)}")
    return 0
