"""Inference latency / throughput of the methods at several prompt lengths, interleaved in one run.

    python benchmarks/bench_latency.py                                  # ViT-S, 8x112 and 16x224, batch 1
    python benchmarks/bench_latency.py --models vit-s,vit-b --prompts 1,50,100,200,400
    python benchmarks/bench_latency.py --device cuda --batch 1,32 --amp  # on a GPU, with a throughput batch

Per (model, clip, batch) one table: median latency, spread ((max - min) / median over the
repeats), clips/s, forward GFLOPs (fvcore convention), achieved G multiply-adds/s as a fraction
of this machine's fp32 matmul peak, and latency / GFLOPs relative to the base model, both
measured in the same interleaved run.
"""
from __future__ import annotations

import argparse
import contextlib

import torch

from common import (
    Variant,
    build,
    gflops,
    interleaved,
    matmul_peak,
    parse_clip,
    parse_list,
    ratio_stats,
    setup,
    stats,
    table,
    variants,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", default="vit-s", help="comma list of vit-s, vit-b, vit-l, tiny (default vit-s)")
    p.add_argument("--clips", default="8x112,16x224", help="comma list FRAMESxSIZE (default 8x112,16x224)")
    p.add_argument("--methods", default="base,apt,vpt,adaptformer,lora,approx_prompt",
                   help="comma list; 'base' is the backbone alone "
                        "(default base,apt,vpt,adaptformer,lora,approx_prompt)")
    p.add_argument("--prompts", default="1,50,100,200,400", help="prompt lengths for apt and vpt")
    p.add_argument("--batch", default="1", help="comma list of batch sizes (default 1)")
    p.add_argument("--repeats", type=int, default=5, help="measured rounds (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured rounds first (default 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action="store_true", help="bf16 autocast")
    p.add_argument("--compile", action="store_true", help="torch.compile every model first (slow to start)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")


def measure(model: str, clip: tuple[int, int], batch: int, vs: list[Variant], args, peak: float) -> str:
    T, S = clip
    dev = args.device
    base = build(Variant(None), model, T, S).to(dev).eval()
    nets = {v.label: (base if v.method is None else build(v, model, T, S, shared=base).to(dev).eval()) for v in vs}
    flops = {k: gflops(n, T, S) for k, n in nets.items()}
    if args.compile:
        nets = {k: torch.compile(n) for k, n in nets.items()}
    x = torch.randn(batch, 3, T, S, S, device=dev)
    amp = torch.autocast(dev.split(":")[0], dtype=torch.bfloat16) if args.amp else contextlib.nullcontext()

    def call(net):
        def run():
            with torch.inference_mode(), amp:
                net(x)
        return run

    times = interleaved({k: call(n) for k, n in nets.items()}, args.repeats, args.warmup, dev,
                        desc=f"{model} {T}x{S} b{batch}")
    ref = "base" if "base" in times else next(iter(times))
    rows = []
    for k, ts in times.items():
        s = stats(ts)
        r = ratio_stats(ts, times[ref])
        rate = flops[k] * batch / s.median
        rows.append([k, f"{s.median * 1e3:.1f}", f"{100 * s.spread:.0f}%", f"{batch / s.median:.2f}",
                     f"{flops[k]:.1f}", f"{rate:.0f}", f"{100 * rate / peak:.0f}%",
                     f"{r.median:.3f} [{r.lo:.2f}-{r.hi:.2f}]", f"{flops[k] / flops[ref]:.3f}"])
    head = ["variant", "ms", "spread", "clips/s", "GFLOPs", "GMAC/s", "of peak", f"time/{ref} [min-max]",
            f"GFLOPs/{ref}"]
    return f"\n## {model} {T}x{S}x{S}, batch {batch}, {dev}{' bf16' if args.amp else ''}\n" + table(head, rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    args = p.parse_args(argv)
    setup(args.threads, args.device)
    peak = matmul_peak(args.device)
    print(f"# fp32 matmul peak on this machine: {peak:.0f} G multiply-adds/s (2048^3, best of 5)")
    vs = variants(parse_list(args.methods), parse_list(args.prompts, int))
    for model in parse_list(args.models):
        for clip in map(parse_clip, parse_list(args.clips)):
            for batch in parse_list(args.batch, int):
                print(measure(model, clip, batch, vs, args, peak), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
