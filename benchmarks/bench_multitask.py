"""Many tasks on one backbone (aptune.multitask): one mixed batch against the same clips run task
by task on one model per task, and the memory of both.

For each method (default APT / LoRA / VPT; AdaptFormer, Approximated PT and ST-Adapter on request) and
task count n (2, 4, 8) it writes n adapters of that method (prompt lengths and widths vary, random tensors)
on one backbone file, then times, round
robin over --repeats rounds:
  mixed     one MultiTaskModel forward over n * --clips clips, tasks interleaved in the batch
  per task  each task's own model (aptune.load_adapter) on its own --clips clips, one after another
and reports clips/s of both and their ratio (per-round medians [min-max]); the largest difference of
any logit between the two (they must agree); the tensor bytes (parameters + buffers) of the
multi-task model against the n per-task models; and the resident-set growth of building each.

    .venv/bin/python benchmarks/bench_multitask.py                       # ViT-S 16x224, CPU (~5 min on 2 cores)
    .venv/bin/python benchmarks/bench_multitask.py --model vit-b --device cuda --clips 8
    .venv/bin/python benchmarks/bench_multitask.py --smoke               # tiny backbone, seconds
"""
from __future__ import annotations

import argparse
import gc
import json
import tempfile
from pathlib import Path

import torch

import aptune
from aptune.multitask import load_adapters

from common import MODELS, _status_kb, interleaved, parse_list, ratio_stats, setup, stats, table

# per method: options of the i-th task (prompt lengths vary, so mixed batches need padding)
OPTIONS = {
    "apt": lambda i: {"num_prompts": [8, 16, 32, 50][i % 4]},
    "lora": lambda i: {"rank": 8},
    "vpt": lambda i: {"num_prompts": [10, 25, 50, 5][i % 4]},
    "adaptformer": lambda i: {"bottleneck": 64},
    "approx_prompt": lambda i: {"num_prompts": [50, 100, 200, 25][i % 4]},
    "st_adapter": lambda i: {"width": [96, 192][i % 2]},
}
CLASSES = [101, 51, 174, 400]


def tensor_bytes(module: torch.nn.Module) -> int:
    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def rss_growth(fn):
    """(result of fn, MiB the resident set grew while building it)."""
    gc.collect()
    before = _status_kb("VmRSS")
    out = fn()
    gc.collect()
    return out, (_status_kb("VmRSS") - before) / 1024


def write_adapters(root: Path, model: str, ckpt: Path, method: str, n: int, frames: int, size: int) -> dict:
    dirs = {}
    for i in range(n):
        torch.manual_seed(i)
        net = aptune.create_model(model, num_classes=CLASSES[i % 4], num_frames=frames, img_size=size,
                                  checkpoint=ckpt, method=method, **OPTIONS[method](i))
        with torch.no_grad():
            for name, p in net.named_parameters():     # random, so LoRA's zero-init B counts too
                if p.requires_grad and not name.endswith("scale"):
                    p.copy_(torch.randn_like(p) * 0.02)
        dirs[f"{method}{i}"] = aptune.save_adapter(net, root / f"{method}{i}")
        del net
    return dirs


def measure(args, root: Path, ckpt: Path, method: str, n: int) -> dict:
    dirs = write_adapters(root / f"{method}-{n}", args.model, ckpt, method, n, args.frames, args.size)
    mt, mt_rss = rss_growth(lambda: load_adapters(dirs, checkpoint=ckpt, device=args.device))
    own, own_rss = rss_growth(lambda: {t: aptune.load_adapter(d, checkpoint=ckpt).to(args.device).eval()
                                       for t, d in dirs.items()})
    tasks = [t for _ in range(args.clips) for t in dirs]                # interleaved: a b c a b c ...
    x = torch.randn(len(tasks), 3, args.frames, args.size, args.size, generator=torch.Generator().manual_seed(0))
    x = x.to(args.device)
    rows = {t: [i for i, s in enumerate(tasks) if s == t] for t in dirs}

    def mixed():
        return mt(x, tasks)

    def per_task():
        return {t: own[t](x[r]) for t, r in rows.items()}

    with torch.inference_mode():
        a, b = mixed(), per_task()
        diff = max(float((a[i] - b[t][k]).abs().max()) for t, r in rows.items() for k, i in enumerate(r))
        times = interleaved({"mixed": mixed, "per_task": per_task}, args.repeats, args.warmup, args.device,
                            desc=f"{method} x{n}")
    bb = tensor_bytes(mt.backbone) - sum(p.numel() * p.element_size() for nm, p in mt.backbone.named_parameters()
                                         if ".tasks." in nm)
    return {"method": method, "tasks": n, "clips": len(tasks),
            "mixed_clips_s": len(tasks) / stats(times["mixed"]).median,
            "per_task_clips_s": len(tasks) / stats(times["per_task"]).median,
            "speedup": ratio_stats(times["per_task"], times["mixed"]).__dict__,
            "max_logit_diff": diff,
            "multi_mib": tensor_bytes(mt) / 2**20, "per_task_mib": sum(tensor_bytes(m) for m in own.values()) / 2**20,
            "backbone_mib": bb / 2**20, "multi_rss_mib": mt_rss, "per_task_rss_mib": own_rss}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vit-s", choices=sorted(MODELS), help="backbone")
    p.add_argument("--frames", type=int, default=16, help="frames per clip")
    p.add_argument("--size", type=int, default=224, help="clip height = width")
    p.add_argument("--methods", default="apt,lora,vpt", help=f"comma list of {', '.join(OPTIONS)}")
    p.add_argument("--tasks", default="2,4,8", help="comma list of task counts")
    p.add_argument("--clips", type=int, default=1, help="clips per task in the batch")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    p.add_argument("--smoke", action="store_true", help="tiny backbone, 4x32 clips, 2 tasks, 1 round")
    args = p.parse_args(argv)
    if args.smoke:
        args.model, args.frames, args.size, args.tasks, args.repeats, args.warmup = "tiny", 4, 32, "2", 1, 0
    args.model = MODELS[args.model]
    setup(args.threads, args.device)
    methods, counts = parse_list(args.methods), parse_list(args.tasks, int)
    bad = [m for m in methods if m not in OPTIONS]
    if bad:
        raise SystemExit(f"--methods: {bad} not among {sorted(OPTIONS)}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        ckpt = root / "backbone.pth"
        torch.save(aptune.create_model(args.model).state_dict(), ckpt)
        for method in methods:
            for n in counts:
                results.append(measure(args, root, ckpt, method, n))
                gc.collect()
    print(f"# {args.model} {args.frames}x{args.size}, {args.clips} clip(s) per task, {args.repeats} rounds")
    print(table(["method", "tasks", "clips", "mixed clips/s", "per-task clips/s", "mixed speed-up [min-max]",
                 "max |diff|", "tensors MiB: multi", "per-task", "backbone", "RSS MiB: multi", "per-task"],
                [[r["method"], r["tasks"], r["clips"], f"{r['mixed_clips_s']:.2f}", f"{r['per_task_clips_s']:.2f}",
                  f"{r['speedup']['median']:.2f} [{r['speedup']['lo']:.2f}-{r['speedup']['hi']:.2f}]",
                  f"{r['max_logit_diff']:.1e}", f"{r['multi_mib']:.1f}", f"{r['per_task_mib']:.1f}",
                  f"{r['backbone_mib']:.1f}", f"{r['multi_rss_mib']:.0f}", f"{r['per_task_rss_mib']:.0f}"]
                 for r in results]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    bad = [r for r in results if r["max_logit_diff"] > 1e-4]
    if bad:
        print(f"# MISMATCH: mixed and per-task logits differ by up to {max(r['max_logit_diff'] for r in bad):.1e}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
