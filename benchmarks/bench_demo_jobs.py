"""How the demo's training runs should share the CPU: one process of 2 torch threads, one process of 1
thread, or 2 processes of 1 thread each at the same time (what `aptune demo` does by default).

    python benchmarks/bench_demo_jobs.py                 # APT (16), 640 clips x 2 epochs per run
    python benchmarks/bench_demo_jobs.py --num-train 3000 --epochs 8 --row "VPT-deep (32)"

Each run is one demo row (aptune.demo.train_seed) in a fresh process; it prints the run's wall time and
CPU time (user + system). The table gives runs per minute for each arrangement and the ratio to the
one-process, two-thread arrangement measured in the same call. Numbers are printed, never asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def worker(args) -> None:
    """One training run at args.threads torch threads; prints a JSON line."""
    import torch

    from aptune.demo import DemoConfig, default_rows, demo_checkpoint, demo_datasets, train_seed
    torch.set_num_threads(args.threads)
    cfg = DemoConfig(out=args.work, num_train=args.num_train, num_val=50, num_test=100, epochs=args.epochs)
    sets = demo_datasets(cfg)
    row = next(r for r in default_rows() if r.label == args.row)
    run = train_seed(cfg, row, sets, Path(args.work) / f"run_{args.tag}", str(demo_checkpoint()), seed=0)
    print(json.dumps({"seconds": run["seconds"], "cpu_seconds": run["cpu_seconds"], "top1": run["top1"]}))


def launch(args, threads: int, tag: str) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--worker", "--threads", str(threads), "--tag", tag, "--row", args.row,
           "--num-train", str(args.num_train), "--epochs", str(args.epochs), "--work", args.work]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"})


def arrangement(args, procs: int, threads: int) -> dict:
    t0 = time.time()
    running = [launch(args, threads, f"{procs}x{threads}_{i}") for i in range(procs)]
    runs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in running]
    wall = time.time() - t0
    return {"arrangement": f"{procs} process(es) x {threads} thread(s)", "runs": procs, "wall": wall,
            "run_seconds": [r["seconds"] for r in runs], "cpu_seconds": [r["cpu_seconds"] for r in runs],
            "top1": [r["top1"] for r in runs], "runs_per_min": 60 * procs / wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--row", default="APT (16)")
    p.add_argument("--num-train", type=int, default=640)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--work", default="bench_demo_jobs_out")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--tag", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    results = [arrangement(args, 1, 2), arrangement(args, 1, 1), arrangement(args, 2, 1)]
    base = results[0]["runs_per_min"]
    print(f"{args.row}: {args.num_train} clips x {args.epochs} epochs per run\n")
    print("| arrangement | wall (s) | per run: wall (s) | per run: CPU (s) | runs/min | vs 1 x 2 threads | top-1 |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in results:
        print(f"| {r['arrangement']} | {r['wall']:.0f} | {', '.join(f'{s:.0f}' for s in r['run_seconds'])} "
              f"| {', '.join(f'{s:.1f}' for s in r['cpu_seconds'])} | {r['runs_per_min']:.2f} "
              f"| {r['runs_per_min'] / base:.2f} | {', '.join(f'{t:.1f}' for t in r['top1'])} |")


if __name__ == "__main__":
    main()
