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
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from .config import Config
from .console import progress
from .data.datasets import VideoDataset
from .data.synthetic import CLASSES, SynthConfig, generate_dataset, labeled_clip
from .demo_report import format_table, write_results
from .engine.train import train
from .errors import ConfigError, MissingFileError
from .factory import count_parameters
from .models.zoo import get_config
from .profiling.flops import count_flops
from .stats import bootstrap_ci_seeds

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
    seeds: int | None = None             # training seeds; None: DemoConfig.seeds (a row that decides a comparison)
    default: bool = True                 # in the default table (all_rows says why some are not)


def all_rows(quick: bool = False) -> list[DemoRow]:
    """Every row the demo offers, in table order. Learning rates and weight decays were chosen on the val
    split by benchmarks/demo_sweep.py (docs/DEMO.md); the parameter-efficient rows all train
    DemoConfig.epochs epochs (8), at about 2% of the backbone's parameters (APT (16): 0.67%). Linear
    probing trains on cached features, cheaply, for longer: more epochs can only help it, so the gap to
    full tuning is not flattered. The rows with `default=False` are left out of `make demo` so that every
    row that decides a comparison trains 3 seeds within the 15 minutes (issue 27: seeds, not rows);
    `aptune demo --methods all` runs them too (about 21 minutes on 2 cores; the eight rows without LoRA took
    17.1, docs/demo/seeds3/). They are APT (64)
    (more prompts: level with APT (16) in that run), Approximated PT (the other adapter-like row beside
    AdaptFormer, and the costliest to pin down: its seeds spread over 10 points) and LoRA (8) (not a method
    of the paper's tables)."""
    linear_epochs = 5 if quick else 60
    rows = [
        DemoRow("Linear probing", "linear", lr=2.7e-2, weight_decay=1e-4, epochs=linear_epochs, cache_features=True),
        # reference rows, one seed each: far from every comparison (random init) or its ceiling (full tuning)
        DemoRow("Linear probing (random init)", "linear", lr=1e-3 / 3, epochs=linear_epochs, cache_features=True,
                pretrained=False, seeds=1),
        DemoRow("VPT-deep (32)", "vpt", {"num_prompts": 32, "deep": True}, lr=2.7e-2),
        DemoRow("AdaptFormer (16)", "adaptformer", {"bottleneck": 16}, lr=2.7e-2),
        DemoRow("LoRA (8)", "lora", {"rank": 8}, lr=3e-3, default=False),
        DemoRow("Approx. prompt (16)", "approx_prompt", {"num_prompts": 16}, lr=3e-3, default=False),
        DemoRow("APT (16)", "apt", {"num_prompts": 16}, lr=2.7e-2, highlight=True),
        DemoRow("APT (64)", "apt", {"num_prompts": 64}, lr=2.7e-2, highlight=True, default=False),
        # full tuning: 10 epochs (75% val; 4 epochs: 49%); the PE rows all share DemoConfig.epochs
        DemoRow("Full fine-tuning", "full", lr=5e-4, weight_decay=0.05, epochs=10, seeds=1),
    ]
    if quick:
        rows = [replace(r, epochs=min(r.epochs, 5)) if r.epochs else r
                for r in rows if r.label in ("Linear probing", "APT (16)", "Full fine-tuning")]
    return rows


def default_rows(quick: bool = False) -> list[DemoRow]:
    """The rows `make demo` runs (see all_rows)."""
    return [r for r in all_rows(quick) if r.default]


def extra_rows() -> list[DemoRow]:
    """The rows left out of the default table, run when asked (`aptune demo --methods all`, or by method
    name); the val sweep covers them."""
    return [r for r in all_rows() if not r.default]


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
    seeds: int = 3                       # training seeds 0 .. seeds-1 of every row that decides a comparison
    jobs: int | None = None              # training runs at a time, in worker processes (None: the cores, <= 8)
    threads: int = 1                     # torch threads per training run (one: deterministic, and far faster
                                         # on a busy machine than two threads fighting for the cores)
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
    return get_config(cfg.model).num_frames


def _render_split(cfg: DemoConfig, split: str, n: int, bar) -> tuple[list, list]:
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


def _run_config(cfg: DemoConfig, row: DemoRow, run_dir: Path, checkpoint: str | None, seed: int = 0):
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
        "runtime": {"device": "cpu", "seed": seed, "cache_features": row.cache_features, "log_every_steps": 10},
    }, source=f"demo row {row.label!r}")
    return c


def _row_dir(out: Path, row: DemoRow) -> Path:
    return out / "runs" / row.label.lower().replace(" ", "_").replace("(", "").replace(")", "").replace(".", "")


def row_seeds(cfg: DemoConfig, row: DemoRow) -> list[int]:
    """The training seeds of a row: 0 .. n-1 (seed 0 is the single-seed demo's run)."""
    return list(range(cfg.seeds if row.seeds is None else row.seeds))


def train_row(cfg: DemoConfig, row: DemoRow, datasets: dict, run_dir: Path, checkpoint: str | None,
              test: bool = True, seed: int = 0):
    """Train one row with one training seed in a fresh run_dir (the checkpoint only for a pre-trained row;
    test=False: no test at the end, as the val sweep wants). The seed sets what training draws: the new
    parameters' init (and a random backbone's), the data order, the augmentation and dropout; the clips
    stay the same. Returns (train()'s result, the run config, seconds)."""
    if run_dir.exists():
        shutil.rmtree(run_dir)                                               # a fresh run each time
    rc = _run_config(cfg, row, run_dir, checkpoint if row.pretrained else None, seed)
    rc.eval.test_at_end = test
    if hasattr(datasets["train"], "seed"):
        datasets["train"].seed = seed               # its crops, as build_dataset seeds them with runtime.seed
    t0 = time.time()
    res = train(rc, datasets=datasets)
    return res, rc, time.time() - t0


def train_seed(cfg: DemoConfig, row: DemoRow, datasets: dict, run_dir: Path, checkpoint: str | None,
               seed: int) -> dict:
    """Train and test one row with one seed; what the row's entry needs from the run (picklable: a worker
    process returns it). `cpu_seconds`: the process's CPU time for the run (user + system)."""
    import resource  # Unix only: imported where it is used, so that aptune imports elsewhere
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    res, rc, seconds = train_row(cfg, row, datasets, run_dir, checkpoint, seed=seed)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    test, model = res["test"], res["model"]
    params = count_parameters(model)
    return {"seed": seed, "top1": test["video_top1"], "top5": test["video_top5"], "clip_top1": test["clip_top1"],
            "video_correct": test["video_correct"], "test_videos": test["num_videos"],
            "views": test["num_views"] // max(test["num_videos"], 1),
            "val_top1": res["val"].get("top1") if res["val"] else None, "seconds": seconds,
            "cpu_seconds": r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime, "epochs": rc.optim.epochs,
            "tunable_params": params["trainable"], "total_params": params["total"], "gflops": count_flops(model)}


def row_entry(row: DemoRow, runs: list[dict]) -> dict:
    """A row's results.json entry from its seeds' runs: top-1 as the mean over seeds, each seed's
    (`top1_seeds`), their range, and the 95% interval over seeds x test videos (two-level bootstrap;
    over test videos alone with one seed)."""
    top1s, first = [r["top1"] for r in runs], runs[0]
    vals = [r["val_top1"] for r in runs]
    return {"name": row.label, "method": row.method, "options": row.options, "pretrained": row.pretrained,
            "highlight": row.highlight, "seeds": [r["seed"] for r in runs], "top1": _mean(top1s),
            "top1_seeds": top1s, "top1_range": [min(top1s), max(top1s)],
            "top1_ci": list(bootstrap_ci_seeds([r["video_correct"] for r in runs])),
            "ci_over": "seeds x test videos" if len(runs) > 1 else "test videos",
            "top5": _mean([r["top5"] for r in runs]), "test_videos": first["test_videos"],
            "tunable_params": first["tunable_params"], "total_params": first["total_params"],
            "tunable_percent": 100.0 * first["tunable_params"] / first["total_params"], "gflops": first["gflops"],
            "train_seconds": sum(r["seconds"] for r in runs), "seed_seconds": [r["seconds"] for r in runs],
            "seed_cpu_seconds": [r["cpu_seconds"] for r in runs], "clip_top1": _mean([r["clip_top1"] for r in runs]),
            "val_top1": _mean(vals) if None not in vals else None, "epochs": first["epochs"], "lr": row.lr,
            "weight_decay": row.weight_decay, "views": first["views"]}


# ---- running the seeds: in this process, or in worker processes of one thread each ----------------------
_WORKER: dict = {}


def _init_worker(datasets: dict, threads: int) -> None:
    torch.set_num_threads(threads)
    _WORKER["datasets"] = datasets


def _work(cfg: DemoConfig, row: DemoRow, run_dir: Path, checkpoint: str | None, seed: int) -> dict:
    """One (row, seed) in a worker; its console output goes to <row>/seed_<k>.log."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(run_dir.parent / f"seed_{seed}.log", "w") as log, redirect_stdout(log), redirect_stderr(log):
        return train_seed(cfg, row, _WORKER["datasets"], run_dir, checkpoint, seed)


def run_seeds(cfg: DemoConfig, datasets: dict, out: Path, checkpoint: str, done) -> dict:
    """Every (row index, seed) run, in cfg.jobs processes of cfg.threads torch threads each (cfg.jobs = 1:
    in this process, one after the other). Runs are deterministic at one thread, so the numbers do not
    depend on cfg.jobs. `done(row, outcome)` after each run. Returns {(row index, seed): outcome}."""
    jobs = [(i, row, seed, _row_dir(out, row) / f"seed_{seed}") for i, row in enumerate(cfg.rows)
            for seed in row_seeds(cfg, row)]
    # the longest first, so that two workers end together: more epochs first, cached-feature probes last
    jobs.sort(key=lambda job: (job[1].cache_features, -(job[1].epochs or cfg.epochs)))
    workers = min(cfg.jobs or _cores(), len(jobs))
    if workers <= 1:
        return _run_here(cfg, jobs, datasets, checkpoint, done)
    ctx = multiprocessing.get_context("spawn")        # a fresh interpreter: no forked OpenMP or torch state
    outcomes = {}
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(datasets, cfg.threads)) as pool:
        futures = {pool.submit(_work, cfg, row, run_dir, checkpoint, seed): (i, row, seed)
                   for i, row, seed, run_dir in jobs}
        for fut in as_completed(futures):
            i, row, seed = futures[fut]
            outcomes[i, seed] = fut.result()
            done(row, outcomes[i, seed])
    return outcomes


def _run_here(cfg: DemoConfig, jobs: list, datasets: dict, checkpoint: str, done) -> dict:
    before, outcomes = torch.get_num_threads(), {}
    torch.set_num_threads(cfg.threads)
    try:
        for i, row, seed, run_dir in jobs:
            outcomes[i, seed] = train_seed(cfg, row, datasets, run_dir, checkpoint, seed)
            done(row, outcomes[i, seed])
    finally:
        torch.set_num_threads(before)
    return outcomes


def _cores() -> int:
    """The default number of worker processes: the CPU cores this process may use, at most 8 (each worker
    holds a copy of the clips, about 0.2 GB, besides torch)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(cores, 8)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def run_demo(cfg: DemoConfig) -> list[dict]:
    """Run every row with its seeds; write results.{md,json,png} under cfg.out; return the rows as dicts."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    ckpt = str(cfg.checkpoint or demo_checkpoint())
    datasets = demo_datasets(cfg)
    runs = sum(len(row_seeds(cfg, r)) for r in cfg.rows)
    workers = min(cfg.jobs or _cores(), runs)
    print(f"aptune demo: {len(cfg.rows)} rows, {runs} training runs (seeds: {cfg.seeds} per row that decides a "
          f"comparison), {workers} at a time x {cfg.threads} torch thread(s)"
          + (f"; each run's log: {out}/runs/<row>/seed_<k>.log" if workers > 1 else ""), flush=True)

    def done(row, r):
        print(f"aptune demo: {row.label}, seed {r['seed']}: top-1 {r['top1']:.1f} ({r['seconds']:.0f} s)", flush=True)
        overall.update(1)
    # the overall bar: training runs done / total, elapsed, ETA
    with progress(total=runs, desc="aptune demo", unit="run", position=0, leave=True) as overall:
        outcomes = run_seeds(cfg, datasets, out, ckpt, done)
    results = [row_entry(row, [outcomes[i, s] for s in row_seeds(cfg, row)]) for i, row in enumerate(cfg.rows)]
    total = time.time() - t_start
    write_results(out, results, cfg, total, _num_frames(cfg))
    print("\n" + format_table(results))
    print(f"\naptune demo: finished in {total / 60:.1f} min; results in {out}/results.md, results.json, results.png")
    return results
