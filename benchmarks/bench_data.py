"""Training clips per CPU core-second (issue 26): aptune's training loader against the decord floor, on
synthetic UCF101-like, SSv2-like and K400-like files (and K400 after `aptune transcode`), and how many
cores of a host keep one H100 busy for ViT-S / ViT-B APT-200 at 16x224.

Per set, one core: the script pins itself to one CPU and one torch thread and counts this process's CPU
time (time.process_time: what the loader costs in core-seconds, whatever else runs on the machine).
Each round loads the same --batch videos through every variant, round robin, so load from other
processes hits them alike; clips per core-second = views (2 per loaded video) / CPU seconds, including
the collation of the batch. Variants:
  before     the loader as it ran before issue 26: every frame from the keyframe on decoded, then the
             per-clip pipeline on the CPU (crop, float, flip, normalise per view), no RandAugment
  before+RA  the same with the authors' RandAugment (rand-m4-n2-mstd0.2-inc1) on the CPU (aptune's own
             lighter colour RandAugment of then cost 25-35%, issue 26)
  after      the trainer's loader now: decode, uint8 crops and the draws (RandAugment configured); the
             rest runs on the training device after collation (its cost is measured below)
  decord     the floor: decord (the authors' decoder) decodes the same frames, OpenCV resizes them once
             (short side 256), two random 224 x 224 crops, uint8
The clips: dense 16 x 4 at 224 with flip (UCF101, K400), 16 segments without flip (SSv2), two views of
one decoded clip per video, as the presets.

    .venv/bin/python -m pip install -c constraints.txt decord opencv-python-headless   # benchmark only
    .venv/bin/python benchmarks/bench_data.py [--sets ucf101,ssv2,k400] [--videos 4] [--rounds 5]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
from torch.utils.data import default_collate

from aptune.data import VideoDataset, decode, sampling
from aptune.data.rand_augment import AUTHORS_POLICY

H100_BF16_TFLOPS = 989.0          # dense, no sparsity (NVIDIA H100 SXM datasheet)
MFU = 0.40

# name -> (container, encoder, codec tag, width, height, fps, seconds, keyframe interval, sampling, flip)
SETS = {
    "ucf101": ("avi", "mpeg4", "XVID", 320, 240, 25, 7, 12, "dense", True),
    "ssv2": ("webm", "libvpx-vp9", None, 426, 240, 12, 4, 60, "segment", False),
    "k400": ("mp4", "libx264", None, 1280, 720, 30, 10, 250, "dense", True),
}
# bit rates near the real sets': UCF101 ~560 kbit/s, SSv2 ~200-300, K400 at 720p a few Mbit/s
ENCODER_OPTIONS = {"mpeg4": {"b": "560k"}, "libx264": {"preset": "veryfast", "crf": "23"},
                   "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8", "crf": "45", "b:v": "0"}}


def make_clip(path: Path, seconds=10, fps=25, w=320, h=240, seed=0, encoder="libx264", tag=None, gop=None,
              options=None, noise=3):
    """A moving random-block texture (blocks of h / 30 px, so detail scales with the frame as in real
    footage) with a little noise per frame (`noise` grey levels), not trivially compressible."""
    rng = np.random.default_rng(seed)
    b = max(8, h // 30)
    base = rng.integers(0, 255, (h // b + 16, w // b + 16, 3), dtype=np.uint8).repeat(b, 0).repeat(b, 1)
    noise = rng.integers(0, noise + 1, (8, h, w, 3), dtype=np.uint8)
    with av.open(str(path), "w") as out:
        s = out.add_stream(encoder, rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.gop_size = gop or 2 * fps
        if tag:
            s.codec_tag = tag
        s.options = options if options is not None else {"preset": "veryfast", "crf": "23"}
        for i in range(seconds * fps):
            frame = np.roll(base, (i * b // 4, i * b // 3), axis=(0, 1))[:h, :w] + noise[i % 8]
            for pkt in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                out.mux(pkt)
        out.mux(s.encode(None))


def synthesise(name: str, folder: Path, n: int) -> list[str]:
    ext, enc, tag, w, h, fps, sec, gop, _, _ = SETS[name]
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"v{k}.{ext}" for k in range(n)]
    for k, f in enumerate(names):
        make_clip(folder / f, sec, fps, w, h, seed=k, encoder=enc, tag=tag, gop=gop, options=ENCODER_OPTIONS[enc])
    return names


# ---- the variants --------------------------------------------------------------------------------------
def _decode_range_before(container, stream, wanted, first, last, seek):
    """aptune.data.decode._decode_range as it was before issue 26: every frame from the keyframe on is
    decoded (no skipping of unwanted non-reference frames)."""
    got, to_rgb = {}, decode.UprightRGB()
    if seek:
        container.seek(first, stream=stream, backward=True, any_frame=False)
    for frame in container.decode(stream):
        ts = frame.pts
        if ts is not None and ts in wanted and ts not in got:
            got[ts] = to_rgb(frame)
        if ts is not None and (ts >= last or len(got) == len(wanted)):
            break
    return got


class Before(VideoDataset):
    """The loader before issue 26: the per-clip pipeline on the CPU, read with the decoder of then."""

    def __getitem__(self, index):
        now, decode._decode_range = decode._decode_range, _decode_range_before
        try:
            return super().__getitem__(index)
        finally:
            decode._decode_range = now


def datasets(root: Path, names: list[str], kind: str, flip: bool) -> dict:
    common = dict(root=root, mode="train", num_frames=16, sampling_rate=4, img_size=224, sampling=kind,
                  flip=flip, num_sample=2, seed=0)
    entries = [(f, 0) for f in names]
    return {"before": Before(entries, **common),
            "before+RA": Before(entries, rand_augment=AUTHORS_POLICY, **common),
            "after": VideoDataset(entries, rand_augment=AUTHORS_POLICY, defer_augment=True, **common)}


def decord_floor(path: str, kind: str, rng: random.Random):
    """The floor: decord reads the clip's frames, OpenCV resizes once, two random crops (uint8)."""
    import cv2
    import decord
    vr = decord.VideoReader(path, num_threads=1)
    n = len(vr)
    idx = sampling.dense_train(n, 16, 4, rng) if kind == "dense" else sampling.segment_train(n, 16, rng)
    buf = vr.get_batch(idx).asnumpy()                                       # (16, H, W, 3)
    h, w = buf.shape[1:3]
    nh, nw = (256, int(256 * w / h)) if h <= w else (int(256 * h / w), 256)
    small = np.stack([cv2.resize(f, (nw, nh), interpolation=cv2.INTER_LINEAR) for f in buf])
    views = []
    for _ in range(2):
        y, x = rng.randint(0, nh - 224), rng.randint(0, nw - 224)
        views.append(torch.from_numpy(np.ascontiguousarray(small[:, y:y + 224, x:x + 224])))
    return torch.stack(views), 0, 0


def measure_set(root: Path, names: list[str], kind: str, flip: bool, rounds: int, batch: int) -> dict:
    """CPU seconds per loaded video of every variant, `rounds` interleaved rounds of `batch` videos."""
    ds = datasets(root, names, kind, flip)
    rng = random.Random(0)
    fns = {k: (lambda i, d=d: d[i % len(names)]) for k, d in ds.items()}
    fns["decord"] = lambda i: decord_floor(str(root / names[i % len(names)]), kind, rng)
    cpu = {k: [] for k in fns}
    for r in range(rounds + 1):                                             # round 0 warms up
        for k, fn in fns.items():
            for d in ds.values():
                d.set_epoch(r)
            t = time.process_time()
            default_collate([fn(r * batch + i) for i in range(batch)])
            if r:
                cpu[k].append((time.process_time() - t) / batch)
    return cpu


def device_half(batch: int, device: str, repeats: int = 3) -> float:
    """Seconds per clip of `augment_batch` (RandAugment, float, flip, normalise) on `device`."""
    ds = VideoDataset([("x", 0)], rand_augment=AUTHORS_POLICY, num_sample=2, img_size=224)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (batch, 2, 16, 224, 224, 3), dtype=torch.uint8, generator=g).to(device)
    rows = torch.stack([torch.stack([torch.tensor([float(k % 2)] + ds.train_cfg.ra.draw(random.Random(i * 2 + k)),
                                                  dtype=torch.float64) for k in range(2)]) for i in range(batch)])
    times = []
    for _ in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        ds.augment_batch(x, rows)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:]) / (2 * batch)


# ---- can the host feed the GPU -------------------------------------------------------------------------
def gpu_appetite() -> dict[str, float]:
    """Training clips/s one H100 takes at 40% of its bf16 dense peak, for ViT-S and ViT-B APT-200 at
    16x224: forward counted by aptune.count_flops (fvcore: a multiply-add = 1), x 2 for real FLOPs, x 2
    for the backward (input gradients through the frozen blocks; the prompts' weight gradients are tiny)."""
    import aptune
    out = {}
    for label, name in (("ViT-S APT-200", "videomae-vit-s"), ("ViT-B APT-200", "videomae-vit-b")):
        with torch.device("meta"):
            model = aptune.create_model(name, num_classes=101, method="apt", num_prompts=200)
        gmacs = aptune.count_flops(model, num_frames=16, img_size=224)
        out[label] = (gmacs, MFU * H100_BF16_TFLOPS * 1e12 / (gmacs * 1e9 * 2 * 2))
    return out


# ---- report --------------------------------------------------------------------------------------------
def summarise(cpu: dict) -> dict:
    """Clips per core-second (median over rounds) of each variant, and per-round ratios against decord."""
    rate = {k: 2 / statistics.median(v) for k, v in cpu.items()}
    ratios = [b / a for a, b in zip(cpu["after"], cpu["decord"])]
    gain = [b / a for a, b in zip(cpu["after"], cpu["before"])]
    return {"clips_per_core_s": rate, "after_over_decord": [statistics.median(ratios), min(ratios), max(ratios)],
            "after_over_before": [statistics.median(gain), min(gain), max(gain)]}


def print_report(results: dict, device: dict, appetite: dict) -> None:
    print("\n| files | before | before+RA | after (RA on the device) | decord floor | after / decord | "
          "after / before |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        c, (m, lo, hi), (g, glo, ghi) = r["clips_per_core_s"], r["after_over_decord"], r["after_over_before"]
        print(f"| {name} | {c['before']:.1f} | {c['before+RA']:.1f} | {c['after']:.1f} | {c['decord']:.1f} | "
              f"{m:.2f}x [{lo:.2f}-{hi:.2f}] | {g:.2f}x [{glo:.2f}-{ghi:.2f}] |")
    print("\nclips per core-second (CPU time of one pinned process); [min-max] of the per-round ratios")
    print("\n| device half (RandAugment, float, flip, normalise), batch of 8 videos x 2 views | ms per clip |")
    print("|---|---:|")
    for dev, s in device.items():
        print(f"| {dev} | {1000 * s:.2f} |")
    print("\n| model (16x224) | GFLOPs (fvcore) | H100 clips/s at 40% bf16 | "
          + " | ".join(f"cores for one H100, {n}: before / before+RA / after" for n in results) + " |")
    print("|---|---:|---:|" + "---:|" * len(results))
    for label, (gmacs, need) in appetite.items():
        cells = [" / ".join(f"{need / r['clips_per_core_s'][k]:.0f}" for k in ("before", "before+RA", "after"))
                 for r in results.values()]
        print(f"| {label} | {gmacs:.1f} | {need:.0f} | " + " | ".join(cells) + " |")


def prepare_sets(work: Path, sets: list[str], n: int, workers: int) -> dict:
    """{set name: (folder, file names, sampling, flip)}; k400 adds 'k400 -> 320' through `aptune transcode`."""
    from aptune.data.transcode import transcode
    out = {}
    for name in sets:
        t = time.time()
        names = synthesise(name, work / name, n)
        kind, flip = SETS[name][8], SETS[name][9]
        out[f"{name}-like"] = (work / name, names, kind, flip)
        print(f"# {name}: {n} files in {time.time() - t:.0f}s, {os.path.getsize(work / name / names[0]) / 2**20:.2f} "
              "MiB each", file=sys.stderr)
        if name == "k400":
            jobs = [(str(work / name / f), str(work / "k400_320" / (Path(f).stem + ".mp4"))) for f in names]
            failed = {d: e for d, e in transcode(jobs, workers=workers, show_progress=False).items() if e}
            if failed:
                raise SystemExit(f"transcode failed: {failed}")
            out["k400-like, transcoded to 320"] = (work / "k400_320", [Path(d).name for _, d in jobs], kind, flip)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", default="ucf101,ssv2,k400", help="ucf101, ssv2, k400 (k400 adds its transcoded copy)")
    p.add_argument("--videos", type=int, default=4, help="files per set")
    p.add_argument("--batch", type=int, default=8, help="videos per round and variant")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--cpu", type=int, default=None, help="the core to pin to (default: the last one allowed)")
    p.add_argument("--json", default=None, help="also write the numbers here")
    a = p.parse_args()
    sets = [s for s in a.sets.split(",") if s]
    with tempfile.TemporaryDirectory() as tmp:
        prepared = prepare_sets(Path(tmp), sets, a.videos, workers=len(os.sched_getaffinity(0)))
        core = a.cpu if a.cpu is not None else sorted(os.sched_getaffinity(0))[-1]
        os.sched_setaffinity(0, {core})
        torch.set_num_threads(1)
        import cv2
        cv2.setNumThreads(1)
        print(f"# pinned to CPU {core}, 1 torch thread; load average {os.getloadavg()[0]:.1f} on "
              f"{os.cpu_count()} CPUs", file=sys.stderr)
        results = {}
        for label, (root, names, kind, flip) in prepared.items():
            results[label] = summarise(measure_set(root, names, kind, flip, a.rounds, a.batch))
            print(f"# {label}: {json.dumps(results[label]['clips_per_core_s'])}", file=sys.stderr)
    device = {"cpu (1 thread)": device_half(a.batch, "cpu", repeats=1)}
    if torch.cuda.is_available():
        device[torch.cuda.get_device_name()] = device_half(a.batch, "cuda")
    appetite = gpu_appetite()
    print_report(results, device, appetite)
    print(f"\n{a.videos} files per set, {a.rounds} rounds x {a.batch} videos per variant; load average "
          f"{os.getloadavg()[0]:.1f} at the end on {os.cpu_count()} CPUs")
    if a.json:
        Path(a.json).write_text(json.dumps({"sets": results, "device_half_s_per_clip": device,
                                            "appetite": appetite}, indent=2))


if __name__ == "__main__":
    main()
