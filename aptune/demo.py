"""The embedded demo: the whole job of aptune on one CPU in minutes, with nothing downloaded.

    1. labeled synthetic action clips (aptune.data.synthetic; cached under <out>/data)
    2. the embedded backbone aptune/assets/videomae-demo.pth, pre-trained by `aptune pretrain`
       on unlabeled synthetic clips of another seed and other motions (docs/PRETRAIN.md)
    3. each method fine-tuned by the training engine (aptune.engine.train.train)
    4. multi-view testing, tunable parameters, GFLOPs (aptune.count_flops) and training time
    5. a table like the APT paper's Table 5: <out>/results.md, results.json, results.png

Linear probing on a randomly initialised backbone of the same shape is run as well: it is the
baseline that shows what the pre-training is worth.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .data.synthetic import SynthConfig
from .errors import MissingFileError

ASSET = Path(__file__).parent / "assets" / "videomae-demo.pth"


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
    linear_epochs = 5 if quick else 40
    rows = [
        DemoRow("Linear probing", "linear", lr=1e-2, epochs=linear_epochs, cache_features=True),
        DemoRow("Linear probing (random init)", "linear", lr=1e-2, epochs=linear_epochs, cache_features=True,
                pretrained=False),
        DemoRow("VPT-deep (8)", "vpt", {"num_prompts": 8, "deep": True}),
        DemoRow("AdaptFormer (16)", "adaptformer", {"bottleneck": 16}),
        DemoRow("APT (4)", "apt", {"num_prompts": 4}, highlight=True),
        DemoRow("APT (16)", "apt", {"num_prompts": 16}, highlight=True),
        DemoRow("APT (64)", "apt", {"num_prompts": 64}, highlight=True),
        DemoRow("Approx. prompt (16)", "approx_prompt", {"num_prompts": 16}),
        DemoRow("Full fine-tuning", "full", lr=5e-4, weight_decay=0.05, layer_decay=0.75),
    ]
    if quick:
        rows = [r for r in rows if r.label in ("Linear probing", "APT (16)", "Full fine-tuning")]
    return rows


@dataclass
class DemoConfig:
    out: str = "demo_out"
    model: str = "videomae-demo"
    checkpoint: str | None = None        # None: the embedded asset
    num_train: int = 300
    num_val: int = 40
    num_test: int = 100
    seed: int = 0                        # labeled data seed (the backbone was pre-trained on seed 1000)
    frames: int = 16                     # frames per video; the model samples 8 with stride 2 (the whole clip)
    size: int = 48
    object_scale: float = 1.4            # big objects (about 1/4-1/2 of the frame) that travel 40-90% of it,
    motion_scale: float = 2.5            # on flat or smoothly graded backgrounds with light noise: a task a
    max_noise: float = 0.02              # few CPU minutes can learn, still needing frame order
    backgrounds: tuple = ("plain", "gradient")
    textures: tuple = ("solid",)
    sampling_rate: int = 2
    test_clips: int = 3                  # multi-view test: 3 temporal clips x 1 crop (square videos)
    test_crops: int = 1
    epochs: int = 5
    batch_size: int = 16
    label_smoothing: float = 0.1
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


def _datasets(cfg: DemoConfig, root: Path) -> dict:
    from .data.datasets import VideoDataset
    common = dict(root=root, num_frames=_num_frames(cfg), sampling_rate=cfg.sampling_rate, img_size=cfg.size,
                  seed=cfg.seed)
    # mild crops (objects must stay in view) and no flip: the classes name directions
    return {"train": VideoDataset(root / "train.txt", mode="train", flip=False, scale=(0.7, 1.0), **common),
            "val": VideoDataset(root / "val.txt", mode="val", **common),
            "test": VideoDataset(root / "test.txt", mode="test", num_clips=cfg.test_clips,
                                 num_crops=cfg.test_crops, **common)}


def _run_config(cfg: DemoConfig, row: DemoRow, run_dir: Path, checkpoint: str | None):
    from .config import Config
    epochs = row.epochs or cfg.epochs
    c = Config.from_dict({
        "data": {"num_frames": _num_frames(cfg), "sampling_rate": cfg.sampling_rate, "img_size": cfg.size,
                 "flip": False, "num_workers": 0, "test_clips": cfg.test_clips, "test_crops": cfg.test_crops},
        "model": {"name": cfg.model, "checkpoint": checkpoint},
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


def run_demo(cfg: DemoConfig) -> list[dict]:
    """Run every row; write results.{md,json,png} under cfg.out; return the rows as dicts."""
    import shutil

    from . import count_parameters
    from .engine.train import train
    from .profiling.flops import count_flops
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    root = ensure_dataset(cfg)
    ckpt = str(cfg.checkpoint or demo_checkpoint())
    results = []
    for i, row in enumerate(cfg.rows, 1):
        print(f"\naptune demo [{i}/{len(cfg.rows)}] {row.label} ({time.time() - t_start:.0f} s elapsed)", flush=True)
        run_dir = out / "runs" / row.label.lower().replace(" ", "_").replace("(", "").replace(")", "").replace(".", "")
        if run_dir.exists():
            shutil.rmtree(run_dir)                                           # a fresh run each time
        rc = _run_config(cfg, row, run_dir, ckpt if row.pretrained else None)
        t0 = time.time()
        res = train(rc, datasets=_datasets(cfg, root))
        seconds = time.time() - t0
        model = res["model"]
        params = count_parameters(model)
        test = res["test"]
        results.append({"method": row.label, "name": row.method, "options": row.options,
                        "pretrained": row.pretrained, "highlight": row.highlight, "tunable_params": params["trainable"],
                        "total_params": params["total"],
                        "tunable_percent": 100.0 * params["trainable"] / params["total"],
                        "gflops": count_flops(model), "top1": test["video_top1"], "top5": test["video_top5"],
                        "clip_top1": test["clip_top1"], "val_top1": res["val"].get("top1") if res["val"] else None,
                        "train_seconds": seconds, "epochs": rc.optim.epochs,
                        "views": test["num_views"] // max(test["num_videos"], 1)})
        print(f"aptune demo: {row.label}: top-1 {test['video_top1']:.1f}  top-5 {test['video_top5']:.1f}  "
              f"({seconds:.0f} s)", flush=True)
    total = time.time() - t_start
    write_results(out, results, cfg, total)
    print("\n" + format_table(results))
    print(f"\naptune demo: finished in {total / 60:.1f} min; results in {out}/results.md, results.json, results.png")
    return results


# ---- reporting ----------------------------------------------------------------------------
def format_table(rows: list[dict]) -> str:
    """Markdown table in the shape of the APT paper's Table 5."""
    head = "| Method | Tunable params | Tunable % | GFLOPs | Top-1 | Top-5 | Train time (s) |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['tunable_params']:,} | {r['tunable_percent']:.2f} | {r['gflops']:.3f} "
                     f"| {r['top1']:.1f} | {r['top5']:.1f} | {r['train_seconds']:.0f} |")
    return "\n".join(lines)


def write_results(out: Path, rows: list[dict], cfg: DemoConfig, total_seconds: float) -> None:
    from .io import atomic_path, write_json
    n = rows[0]["views"] if rows else 0
    note = (f"Synthetic direction-sensitive actions (10 classes, chance 10%): {cfg.num_train} train / {cfg.num_test} "
            f"test videos; backbone `{cfg.model}`, {cfg.epochs} epochs per method (linear probing on cached "
            f"features: its own count); test = {n} views per video ({cfg.test_clips} clips x {cfg.test_crops} crops), "
            f"softmax averaged. GFLOPs per view (8x{cfg.size}x{cfg.size}), one multiply-add = one FLOP. "
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
        ax.scatter(r["tunable_params"], r["top1"], marker=marker, s=80 if marker == "*" else 40)
    ax.set_xscale("log")
    ax.margins(x=0.15, y=0.12)
    ax.set_xlabel("tunable parameters")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("aptune demo: accuracy vs tunable parameters")
    ax.grid(alpha=0.3)
    fig.tight_layout()               # the layout is final before labels are placed in pixels
    fig.canvas.draw()
    renderer, frame = fig.canvas.get_renderer(), ax.get_window_extent()   # pixels: the axes box

    def label(r: dict, dx: int, dy: int, ha: str = "left"):
        t = ax.annotate(r["method"], (r["tunable_params"], r["top1"]), textcoords="offset points",
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
