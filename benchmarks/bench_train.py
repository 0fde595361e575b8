"""One training step (forward + backward + AdamW step) per method, with its peak memory, plus
aptune's APT against the plainly written model with the same weights (benchmarks/plain.py) and
APT with prompts only in the last k blocks (the frozen prefix runs without autograd).

    python benchmarks/bench_train.py                        # ViT-S 16x224, batch 1, APT-200
    python benchmarks/bench_train.py --methods linear,apt,vpt,adaptformer,lora --prompts 200
    python benchmarks/bench_train.py --device cuda --batch 8 --amp

Times are medians of interleaved rounds; "spread" is (max - min) / median. Peak memory is what
one step adds: on CUDA the growth of max_memory_allocated, on the CPU the growth of the
process's peak resident set (VmHWM), measured step by step after the timing rounds.
"""
from __future__ import annotations

import argparse
import contextlib

import torch
import torch.nn.functional as F

from common import (
    Variant,
    build,
    interleaved,
    parse_clip,
    parse_list,
    peak_memory,
    ratio_stats,
    setup,
    stats,
    table,
    variants,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="vit-s", help="vit-s, vit-b, vit-l or tiny (default vit-s)")
    p.add_argument("--clip", default="16x224", help="FRAMESxSIZE (default 16x224)")
    p.add_argument("--methods", default="linear,apt,vpt,adaptformer,lora,approx_prompt",
                   help="comma list of registered methods (default linear,apt,vpt,adaptformer,lora,approx_prompt)")
    p.add_argument("--prompts", default="200", help="prompt lengths for apt and vpt (default 200)")
    p.add_argument("--last", type=int, default=4, help="also APT with prompts in the last K blocks only (0: skip)")
    p.add_argument("--no-plain", action="store_true", help="skip the plain reference model")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="measured rounds (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured rounds first (default 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action="store_true", help="bf16 autocast")
    p.add_argument("--checkpointing", action="store_true", help="model.grad_checkpointing = True (aptune models)")
    p.add_argument("--threads", type=int, default=None)


def train_step_fn(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, amp: bool):
    """A closure running one optimisation step of `net` on (x, y)."""
    net.train()
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-5)
    dev = x.device.type

    def step():
        with torch.autocast(dev, dtype=torch.bfloat16) if amp else contextlib.nullcontext():
            loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def train_variants(args) -> list[Variant]:
    prompts = parse_list(args.prompts, int)
    vs = variants(parse_list(args.methods), prompts)
    depth = {"vit-l": 24}.get(args.model, 4 if args.model == "tiny" else 12)
    if "apt" in parse_list(args.methods):
        if args.last:
            vs.append(Variant("apt", prompts[-1], layers=tuple(range(depth - args.last, depth))))
        if not args.no_plain:
            vs.append(Variant("apt", prompts[-1], plain=True))
    return vs


def run(args) -> tuple[dict, dict, dict]:
    """(times per variant, peak MiB per variant, trainable parameters per variant)."""
    T, S = parse_clip(args.clip)
    dev = args.device
    base = build(Variant(None), args.model, T, S).to(dev)
    vs = train_variants(args)
    nets = {v.label: build(v, args.model, T, S, shared=base).to(dev) for v in vs}
    for n in nets.values():
        if hasattr(n, "grad_checkpointing"):
            n.grad_checkpointing = args.checkpointing
    x = torch.randn(args.batch, 3, T, S, S, device=dev)
    y = torch.randint(0, 101, (args.batch,), device=dev)
    steps = {k: train_step_fn(n, x, y, args.amp) for k, n in nets.items()}
    times = interleaved(steps, args.repeats, args.warmup, dev, desc=f"train {args.model} {args.clip}")
    peaks = {k: peak_memory(fn, dev) for k, fn in steps.items()}
    params = {k: sum(p.numel() for p in n.parameters() if p.requires_grad) for k, n in nets.items()}
    return times, peaks, params


def report(args, times, peaks, params) -> str:
    ref = next((k for k in times if k.startswith("apt") and "@" not in k), next(iter(times)))
    rows = []
    for k, ts in times.items():
        s, r = stats(ts), ratio_stats(ts, times[ref])
        rows.append([k, f"{params[k]:,}", f"{s.median:.3f}", f"{100 * s.spread:.0f}%",
                     f"{r.median:.3f} [{r.lo:.2f}-{r.hi:.2f}]", f"{peaks[k]:.0f}"])
    out = [f"\n## training step: {args.model} {args.clip}, batch {args.batch}, {args.device}"
           f"{' bf16' if args.amp else ''}{' checkpointing' if args.checkpointing else ''}",
           table(["variant", "trainable", "s/step", "spread", f"time/{ref} [min-max]", "peak MiB"], rows)]
    plain = next((k for k in times if k.startswith("plain-")), None)
    if plain:
        ours = plain.removeprefix("plain-")
        r = ratio_stats(times[ours], times[plain])
        out.append(f"\naptune {ours} / plain {ours}: step time {r.median:.3f} [{r.lo:.2f}-{r.hi:.2f}], "
                   f"peak memory {peaks[ours]:.0f} vs {peaks[plain]:.0f} MiB "
                   f"({peaks[ours] / max(peaks[plain], 1e-9):.2f}x)")
    last = next((k for k in times if "@" in k), None)
    if last:
        full = last.split("@")[0]
        r = ratio_stats(times[last], times[full])
        out.append(f"{last} / {full}: step time {r.median:.3f} [{r.lo:.2f}-{r.hi:.2f}], "
                   f"peak memory {peaks[last]:.0f} vs {peaks[full]:.0f} MiB")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    args = p.parse_args(argv)
    setup(args.threads, args.device)
    print(report(args, *run(args)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
