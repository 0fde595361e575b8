"""The demo's table, results files and plot: per row the mean top-1 over its training seeds, the seeds'
range and the 95% interval over seeds x test videos (aptune.stats.bootstrap_ci_seeds)."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from .io import atomic_path, pyplot, write_json


def format_table(rows: list[dict]) -> str:
    """Markdown table in the shape of the APT paper's Table 5: top-1 as the mean over the row's training
    seeds with its 95% interval (over seeds x test videos; over test videos for one seed) and the range
    of the seeds' own top-1."""
    head = ("| Method | Tunable params | Tunable % | GFLOPs | Epochs | Seeds | Top-1 mean [95% CI] | Seed range "
            "| Top-5 | Train time (s) |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        low, high = r["top1_ci"]
        seeds = len(r["top1_seeds"])
        spread = f"{r['top1_range'][0]:.1f}-{r['top1_range'][1]:.1f}" if seeds > 1 else "-"
        lines.append(f"| {r['name']} | {r['tunable_params']:,} | {r['tunable_percent']:.2f} | {r['gflops']:.3f} "
                     f"| {r['epochs']} | {seeds} | {r['top1']:.1f} [{low:.1f}, {high:.1f}] | {spread} "
                     f"| {r['top5']:.1f} | {r['train_seconds']:.0f} |")
    return "\n".join(lines)


def write_results(out: Path, rows: list[dict], cfg, total_seconds: float, num_frames: int) -> None:
    """results.md (the note and the table), results.json (rows, total time, the DemoConfig) and results.png;
    `num_frames`: the frames of a view (the model's, for the GFLOPs note)."""
    n = rows[0]["views"] if rows else 0
    note = (f"Synthetic direction-sensitive actions (10 classes, chance 10%): {cfg.num_train} train / {cfg.num_val} "
            f"val / {cfg.num_test} test videos; backbone `{cfg.model}`; every parameter-efficient row "
            f"trains {cfg.epochs} epochs (linear probing on cached features and full tuning: their own counts, "
            f"column Epochs); learning rates chosen on val (docs/DEMO.md); test = {n} views per video "
            f"({cfg.test_clips} clips x {cfg.test_crops} crops), softmax averaged. Top-1: the mean over the row's "
            f"training seeds (column Seeds: {cfg.seeds} for the rows that decide a comparison); [low, high] = 95% "
            f"percentile bootstrap interval over seeds x test videos (seeds drawn, then videos), over test videos "
            f"for a single seed; Seed range: the lowest and highest seed. "
            f"GFLOPs per view ({num_frames}x{cfg.size}x{cfg.size}), "
            f"one multiply-add = one FLOP. "
            f"Total wall time {total_seconds / 60:.1f} min.")
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text("# aptune demo\n\n" + note + "\n\n" + format_table(rows) + "\n")
    write_json(out / "results.json", {"rows": rows, "total_seconds": total_seconds,
                                      "config": {k: v for k, v in asdict(cfg).items() if k != "rows"}})
    plot_results(rows, out / "results.png")


def plot_results(rows: list[dict], path: Path) -> list:
    """Top-1 against tunable parameters (log scale), one labelled point per method; labels move
    around their point to avoid each other and the frame. Returns the label boxes (pixels)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        marker = "*" if r.get("highlight") else ("x" if not r["pretrained"] else "o")
        dot = ax.scatter(r["tunable_params"], r["top1"], marker=marker, s=80 if marker == "*" else 40, zorder=3)
        if len(r.get("top1_seeds") or []) > 1:             # each seed's own top-1, small and faint
            ax.scatter([r["tunable_params"]] * len(r["top1_seeds"]), r["top1_seeds"], s=10, alpha=0.5, zorder=2,
                       color=dot.get_facecolor()[0])
        if r.get("top1_ci"):                               # the 95% bootstrap interval as an error bar
            low, high = r["top1_ci"]
            ax.errorbar(r["tunable_params"], r["top1"], yerr=[[r["top1"] - low], [high - r["top1"]]], fmt="none",
                        ecolor=dot.get_facecolor()[0], capsize=3, lw=1, zorder=2)
    ax.set_xscale("log")
    ax.margins(x=0.15, y=0.12)
    ax.set_xlabel("tunable parameters")
    ax.set_ylabel("test top-1 (%): seed mean, 95% CI, seeds")
    ax.set_title("aptune demo: accuracy vs tunable parameters")
    ax.grid(alpha=0.3)
    fig.tight_layout()               # the layout is final before labels are placed in pixels
    fig.canvas.draw()
    renderer, frame = fig.canvas.get_renderer(), ax.get_window_extent()   # pixels: the axes box

    def label(r: dict, dx: int, dy: int, ha: str = "left"):
        t = ax.annotate(r["name"], (r["tunable_params"], r["top1"]), textcoords="offset points",
                        xytext=(dx, dy), fontsize=8, ha=ha)
        return t, t.get_window_extent(renderer)

    spots = ((5, 4, "left"), (5, -11, "left"), (-5, 4, "right"), (-5, -11, "right"), (5, 14, "left"))
    placed = []                      # label boxes so far; a label takes the first spot that hits none
    for r in rows:
        for spot in spots:
            t, box = label(r, *spot)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(box.overlaps(b) for b in placed):
                break
            t.remove()
        else:
            t, box = label(r, *spots[0])
        placed.append(box)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return placed
