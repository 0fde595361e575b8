"""The embedded demo: the whole job of aptune on one CPU in minutes, with nothing downloaded.

    1. labeled synthetic action clips (aptune.data.synthetic), rendered into memory
    2. the embedded backbone aptune/assets/vit-demo.pth, pre-trained supervised on the motion kind
       of pool clips of another seed with their frames shuffled (docs/DEMO.md, docs/PRETRAIN.md)
    3. each method fine-tuned by the training engine (aptune.engine.train.train)
    4. multi-view testing, tunable parameters, GFLOPs (aptune.count_flops) and training time
    5. a table like the APT paper's Table 5: <out>/results.md, results.json, results.png

Linear probing on a randomly initialised backbone of the same shape is run as well: it is the
baseline that shows what the pre-training is worth.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .data.synthetic import SynthConfig
from .errors import ConfigError, MissingFileError
from .stats import bootstrap_ci

ASSET = Path(__file__).parent / "assets" / "vit-demo.pth"


def demo_checkpoint() -> Path:
    """Path of the shipped pre-trained demo backbone (raises if the package lacks it)."""
    if not ASSET.is_file():
        raise MissingFileError(f"embedded demo checkpoint missing: {ASSET} (reinstall aptune)")
    return ASSET


@dataclass
class DemoRow:
    """One table row: a method with its options and its own recipe (lr is absolute, for `batch_size`)."""
    label: str
    method: str
    options: dict = field(default_factory=dict)
    lr: float = 3e-3
    weight_decay: float = 1e-4
    epochs: int | None = None            # None: DemoConfig.epochs
    layer_decay: float = 1.0
    pretrained: bool = True              # False: random-init backbone (the reference row)
    cache_features: bool = False
    highlight: bool = False              # drawn as a star: the method the demo is about


def default_rows(quick: bool = False) -> list[DemoRow]:
    """The demo's rows. Learning rates and weight decays were chosen on the val split by
    benchmarks/demo_sweep.py (docs/DEMO.md); the parameter-efficient rows (VPT, AdaptFormer, LoRA,
    Approximated PT, APT) all train DemoConfig.epochs epochs (8), at about 2% of the backbone's
    parameters (APT (16): 0.67%). Linear probing trains on cached features, cheaply, for longer:
    more epochs can only help it, so the gap to full tuning is not flattered."""
    linear_epochs = 5 if quick else 60
    rows = [
        DemoRow("Linear probing", "linear", lr=2.7e-2, weight_decay=1e-4, epochs=linear_epochs, cache_features=True),
        DemoRow("Linear probing (random init)", "linear", lr=1e-3 / 3, epochs=linear_epochs, cache_features=True,
                pretrained=False),
        DemoRow("VPT-deep (32)", "vpt", {"num_prompts": 32, "deep": True}, lr=2.7e-2),
        DemoRow("AdaptFormer (16)", "adaptformer", {"bottleneck": 16}, lr=2.7e-2),
        DemoRow("LoRA (8)", "lora", {"rank": 8}, lr=3e-3),
        DemoRow("Approx. prompt (16)", "approx_prompt", {"num_prompts": 16}, lr=3e-3),
        DemoRow("APT (16)", "apt", {"num_prompts": 16}, lr=2.7e-2, highlight=True),
        DemoRow("APT (64)", "apt", {"num_prompts": 64}, lr=2.7e-2, highlight=True),
        # full tuning: 10 epochs (75% val; 4 epochs: 49%); the PE rows all share DemoConfig.epochs
        DemoRow("Full fine-tuning", "full", lr=5e-4, weight_decay=0.05, epochs=10),
    ]
    if quick:
        rows = [replace(r, epochs=min(r.epochs, 5)) if r.epochs else r
                for r in rows if r.label in ("Linear probing", "APT (16)", "Full fine-tuning")]
    return rows


@dataclass
class DemoConfig:
    out: str = "demo_out"
    model: str = "vit-demo"
    checkpoint: str | None = None        # None: the embedded asset
    num_train: int = 3000               # thousands: with 300, full fine-tuning over-fitted (issue 14)
    num_val: int = 500
    num_test: int = 600
    seed: int = 0                        # labeled data seed (the backbone was pre-trained on seed 1000)
    frames: int = 16                     # frames per video; the model samples 4 of them
    size: int = 32
    object_scale: float = 1.4            # big objects (about 1/4-1/2 of the frame) that travel 40-90% of it,
    motion_scale: float = 2.5            # on flat or smoothly graded backgrounds with light noise: a task a
    max_noise: float = 0.02              # few CPU minutes can learn, still needing frame order
    backgrounds: tuple = ("plain", "gradient")
    textures: tuple = ("solid",)
    sampling_rate: int = 3               # 4 frames at stride 3: a 10-frame window of the 16
    test_clips: int = 2                  # multi-view test: 2 temporal clips x 1 crop (square videos)
    test_crops: int = 1
    epochs: int = 8                      # every parameter-efficient row (full tuning and linear probing: their own)
    batch_size: int = 32
    label_smoothing: float = 0.1
    files: bool = False                  # True: write the clips as mp4 under <out>/data and decode them
    rows: list[DemoRow] = field(default_factory=default_rows)

    @classmethod
    def quick(cls, out: str = "demo_out") -> "DemoConfig":
        return cls(out=out, num_train=40, num_val=10, num_test=20, epochs=1, batch_size=8, test_clips=2,
                   rows=default_rows(quick=True))


def demo_synth_config(cfg: DemoConfig) -> SynthConfig:
    """How the demo's labeled clips look (the pre-training pool uses the same look, another seed)."""
    return SynthConfig(frames=cfg.frames, size=cfg.size, object_scale=cfg.object_scale,
                       motion_scale=cfg.motion_scale, max_noise=cfg.max_noise,
                       backgrounds=tuple(cfg.backgrounds), textures=tuple(cfg.textures))


def ensure_dataset(cfg: DemoConfig) -> Path:
    """Generate the labeled clips under <out>/data unless the same recipe is already there."""
    from .data.synthetic import generate_dataset
    root = Path(cfg.out) / "data"
    synth = demo_synth_config(cfg)
    want = {"seed": cfg.seed, "sizes": {"train": cfg.num_train, "val": cfg.num_val, "test": cfg.num_test},
            "config": asdict(synth)}
    want = json.loads(json.dumps(want))                                     # tuples become lists, as on disk
    meta = root / "dataset.json"
    if meta.is_file():
        have = json.loads(meta.read_text())
        if all(have.get(k) == v for k, v in want.items()):
            print(f"aptune demo: using cached clips in {root}")
            return root
    print(f"aptune demo: generating {cfg.num_train}+{cfg.num_val}+{cfg.num_test} synthetic clips in {root}")
    return generate_dataset(root, cfg.num_train, cfg.num_val, cfg.num_test, cfg.seed, synth)


def _num_frames(cfg: DemoConfig) -> int:
    from .models.zoo import get_config
    return get_config(cfg.model).num_frames


def _render_split(cfg: DemoConfig, split: str, n: int, bar) -> tuple[list, list]:
    from .data.synthetic import labeled_clip
    synth = demo_synth_config(cfg)
    clips, labels = [], []
    for i in range(n):
        clip, y = labeled_clip(cfg.seed, split, i, synth)
        clips.append(clip)
        labels.append(y)
        bar.update()
    return clips, labels


def demo_datasets(cfg: DemoConfig, splits=("train", "val", "test")) -> dict:
    """The labeled splits as in-memory datasets (uint8 clips, decoded or rendered once, not per epoch
    and row). cfg.files=False renders the clips straight into memory (about 400 a second): thousands
    of labeled clips then cost seconds instead of the minutes H.264 coding takes; cfg.files=True
    writes and decodes the mp4 files under <out>/data, the path a real dataset takes."""
    from .console import progress
    from .data.datasets import VideoDataset
    from .data.synthetic import CLASSES
    common = dict(num_frames=_num_frames(cfg), sampling_rate=cfg.sampling_rate, img_size=cfg.size, seed=cfg.seed)
    # mild crops (objects must stay in view) and no flip: the classes name directions
    kwargs = {"train": dict(mode="train", flip=False, scale=(0.7, 1.0)), "val": dict(mode="val"),
              "test": dict(mode="test", num_clips=cfg.test_clips, num_crops=cfg.test_crops)}
    sizes = {"train": cfg.num_train, "val": cfg.num_val, "test": cfg.num_test}
    for split in splits:
        if sizes[split] < 1:
            raise ConfigError(f"demo: num_{split} must be at least 1, got {sizes[split]}")
    if cfg.files:
        root = ensure_dataset(cfg)
        return {s: VideoDataset(root / f"{s}.txt", root=root, **kwargs[s], **common).preload() for s in splits}
    print(f"aptune demo: rendering {' + '.join(str(sizes[s]) for s in splits)} ({'/'.join(splits)}) "
          f"synthetic clips into memory", flush=True)
    out = {}
    with progress(total=sum(sizes[s] for s in splits), desc="render", unit="clip") as bar:
        for s in splits:
            clips, labels = _render_split(cfg, s, sizes[s], bar)
            out[s] = VideoDataset.from_frames(clips, labels, class_names=list(CLASSES), **kwargs[s], **common)
    return out


def _run_config(cfg: DemoConfig, row: DemoRow, run_dir: Path, checkpoint: str | None):
    from .config import Config
    epochs = row.epochs or cfg.epochs
    c = Config.from_dict({
        "data": {"num_frames": _num_frames(cfg), "sampling_rate": cfg.sampling_rate, "img_size": cfg.size,
                 "flip": False, "num_workers": 0, "test_clips": cfg.test_clips, "test_crops": cfg.test_crops},
        "model": {"name": cfg.model, "checkpoint": checkpoint, "random_init": checkpoint is None},
        "method": {"name": row.method, **row.options},
        "optim": {"lr": row.lr * 256 / cfg.batch_size, "min_lr": 0.0, "weight_decay": row.weight_decay,
                  "epochs": epochs, "warmup_epochs": min(1, epochs) if epochs > 2 else 0,
                  "batch_size": cfg.batch_size, "label_smoothing": cfg.label_smoothing,
                  "layer_decay": row.layer_decay},
        "eval": {"every_epochs": epochs, "batch_size": 32},
        "output": {"dir": str(run_dir), "keep_last": 1, "tensorboard": False},
        "runtime": {"device": "cpu", "seed": 0, "cache_features": row.cache_features, "log_every_steps": 10},
    }, source=f"demo row {row.label!r}")
    return c


def _row_dir(out: Path, row: DemoRow) -> Path:
    return out / "runs" / row.label.lower().replace(" ", "_").replace("(", "").replace(")", "").replace(".", "")


def train_row(cfg: DemoConfig, row: DemoRow, datasets: dict, run_dir: Path, checkpoint: str | None,
              test: bool = True):
    """Train one row in a fresh run_dir (the checkpoint only for a pre-trained row; test=False: no test
    at the end, as the val sweep wants). Returns (train()'s result, the run config, seconds)."""
    import shutil

    from .engine.train import train
    if run_dir.exists():
        shutil.rmtree(run_dir)                                               # a fresh run each time
    rc = _run_config(cfg, row, run_dir, checkpoint if row.pretrained else None)
    rc.eval.test_at_end = test
    t0 = time.time()
    res = train(rc, datasets=datasets)
    return res, rc, time.time() - t0


def run_row(cfg: DemoConfig, row: DemoRow, datasets: dict, run_dir: Path, checkpoint: str | None) -> dict:
    """Train and test one row; its results.json entry (top-1 with a bootstrap CI over test videos)."""
    from . import count_parameters
    from .profiling.flops import count_flops
    res, rc, seconds = train_row(cfg, row, datasets, run_dir, checkpoint)
    model, test = res["model"], res["test"]
    params = count_parameters(model)
    return {"name": row.label, "method": row.method, "options": row.options, "pretrained": row.pretrained,
            "highlight": row.highlight, "top1": test["video_top1"],
            "top1_ci": list(bootstrap_ci(test["video_correct"])),
            "top5": test["video_top5"], "test_videos": test["num_videos"], "tunable_params": params["trainable"],
            "total_params": params["total"], "tunable_percent": 100.0 * params["trainable"] / params["total"],
            "gflops": count_flops(model), "train_seconds": seconds, "clip_top1": test["clip_top1"],
            "val_top1": res["val"].get("top1") if res["val"] else None, "epochs": rc.optim.epochs,
            "lr": row.lr, "weight_decay": row.weight_decay,
            "views": test["num_views"] // max(test["num_videos"], 1)}


def run_demo(cfg: DemoConfig) -> list[dict]:
    """Run every row; write results.{md,json,png} under cfg.out; return the rows as dicts."""
    from .console import progress
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    ckpt = str(cfg.checkpoint or demo_checkpoint())
    datasets = demo_datasets(cfg)
    results = []
    # the overall bar (rows done / total, elapsed, ETA) sits above each row's own epoch bars
    overall = progress(total=len(cfg.rows), desc="aptune demo", unit="row", position=0, leave=True)
    with overall:
        for i, row in enumerate(cfg.rows, 1):
            print(f"\naptune demo [{i}/{len(cfg.rows)}] {row.label} ({time.time() - t_start:.0f} s elapsed)",
                  flush=True)
            r = run_row(cfg, row, datasets, _row_dir(out, row), ckpt)
            results.append(r)
            low, high = r["top1_ci"]
            print(f"aptune demo: {row.label}: top-1 {r['top1']:.1f} [{low:.1f}, {high:.1f}]  top-5 {r['top5']:.1f}  "
                  f"({r['train_seconds']:.0f} s)", flush=True)
            overall.update(1)
    total = time.time() - t_start
    write_results(out, results, cfg, total)
    print("\n" + format_table(results))
    print(f"\naptune demo: finished in {total / 60:.1f} min; results in {out}/results.md, results.json, results.png")
    return results


# ---- reporting ----------------------------------------------------------------------------
def format_table(rows: list[dict]) -> str:
    """Markdown table in the shape of the APT paper's Table 5, top-1 with its 95% bootstrap interval."""
    head = "| Method | Tunable params | Tunable % | GFLOPs | Epochs | Top-1 [95% CI] | Top-5 | Train time (s) |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        low, high = r["top1_ci"]
        lines.append(f"| {r['name']} | {r['tunable_params']:,} | {r['tunable_percent']:.2f} | {r['gflops']:.3f} "
                     f"| {r['epochs']} | {r['top1']:.1f} [{low:.1f}, {high:.1f}] | {r['top5']:.1f} "
                     f"| {r['train_seconds']:.0f} |")
    return "\n".join(lines)


def write_results(out: Path, rows: list[dict], cfg: DemoConfig, total_seconds: float) -> None:
    from .io import atomic_path, write_json
    n = rows[0]["views"] if rows else 0
    note = (f"Synthetic direction-sensitive actions (10 classes, chance 10%): {cfg.num_train} train / {cfg.num_val} "
            f"val / {cfg.num_test} test videos; backbone `{cfg.model}`; every parameter-efficient row "
            f"trains {cfg.epochs} epochs (linear probing on cached features and full tuning: their own counts, "
            f"column Epochs); learning rates chosen on val (docs/DEMO.md); test = {n} views per video "
            f"({cfg.test_clips} clips x {cfg.test_crops} crops), softmax averaged; [low, high] = 95% percentile "
            f"bootstrap interval over test videos. GFLOPs per view ({_num_frames(cfg)}x{cfg.size}x{cfg.size}), "
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
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .io import atomic_path
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        marker = "*" if r.get("highlight") else ("x" if not r["pretrained"] else "o")
        dot = ax.scatter(r["tunable_params"], r["top1"], marker=marker, s=80 if marker == "*" else 40, zorder=3)
        if r.get("top1_ci"):                               # the 95% bootstrap interval as an error bar
            low, high = r["top1_ci"]
            ax.errorbar(r["tunable_params"], r["top1"], yerr=[[r["top1"] - low], [high - r["top1"]]], fmt="none",
                        ecolor=dot.get_facecolor()[0], capsize=3, lw=1, zorder=2)
    ax.set_xscale("log")
    ax.margins(x=0.15, y=0.12)
    ax.set_xlabel("tunable parameters")
    ax.set_ylabel("test top-1 (%), 95% bootstrap CI")
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
