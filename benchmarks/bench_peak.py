"""Achieved compute rate against this machine's own fp32 matrix-multiply peak.

    python benchmarks/bench_peak.py                          # ViT-S 16x224, batch 1: base and APT-400
    python benchmarks/bench_peak.py --model vit-b --prompts 200 --device cuda --batch 32

Prints the matmul rate at a few square sizes and at the ViT's own linear shapes (tokens x width),
then the forward rate of the base model and APT (GFLOPs from aptune.count_flops, fvcore
convention: one multiply-add = one FLOP) as a fraction of the best square matmul.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from common import Variant, build, gflops, interleaved, matmul_peak, parse_clip, parse_list, setup, stats, sync, table


def linear_rate(n: int, d_in: int, d_out: int, device: str, repeats: int = 5) -> float:
    """G multiply-adds/s of F.linear on an (n, d_in) input with a (d_out, d_in) weight."""
    x, w = torch.randn(n, d_in, device=device), torch.randn(d_out, d_in, device=device)
    F.linear(x, w)
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        F.linear(x, w)
        sync(device)
        best = min(best, time.perf_counter() - t)
    return n * d_in * d_out / best / 1e9


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vit-s")
    p.add_argument("--clip", default="16x224")
    p.add_argument("--prompts", default="400", help="APT prompt lengths (default 400)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    setup(args.threads, args.device)
    dev = args.device
    rows = [[f"matmul {n}^3", f"{matmul_peak(dev, n):.0f}"] for n in (512, 1024, 2048)]
    peak = max(float(r[1]) for r in rows)
    T, S = parse_clip(args.clip)
    base = build(Variant(None), args.model, T, S).to(dev).eval()
    c = base.config
    n_tok, d = args.batch * (T // c.tubelet_size) * (S // c.patch_size) ** 2, c.embed_dim
    for name, (a, b) in {"qkv": (d, 3 * d), "proj": (d, d), "fc1": (d, 4 * d), "fc2": (4 * d, d)}.items():
        rows.append([f"linear {name} ({n_tok}x{a} -> {b})", f"{linear_rate(n_tok, a, b, dev):.0f}"])
    print("\n## matrix-multiply rates, G multiply-adds/s\n" + table(["kernel", "GMAC/s"], rows))

    nets = {"base": base}
    nets.update({f"apt-{m}": build(Variant("apt", m), args.model, T, S, shared=base).to(dev).eval()
                 for m in parse_list(args.prompts, int)})
    x = torch.randn(args.batch, 3, T, S, S, device=dev)

    def fwd(net):
        def run():
            with torch.inference_mode():
                net(x)
        return run
    times = interleaved({k: fwd(n) for k, n in nets.items()}, args.repeats, 1, dev, desc="forward")
    out = []
    for k, net in nets.items():
        g, s = gflops(net, T, S) * args.batch, stats(times[k])
        out.append([k, f"{g:.1f}", f"{s.median * 1e3:.0f}", f"{100 * s.spread:.0f}%", f"{g / s.median:.0f}",
                    f"{100 * g / s.median / peak:.0f}%"])
    print(f"\n## forward, {args.model} {args.clip}, batch {args.batch}, {dev} (peak = best square matmul, "
          f"{peak:.0f} GMAC/s)\n" + table(["variant", "GFLOPs", "ms", "spread", "GMAC/s", "of peak"], out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
