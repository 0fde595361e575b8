"""Data pipeline throughput: clips/s for dense 16x4 224 px training clips and 5x3 test
views, DataLoader num_workers 0/1/2, against a baseline that decodes every frame of the
video and then indexes. Videos: synthetic 10 s 320x240 H.264 MP4 at 25 fps (keyframe every
2 s), made with PyAV in a temporary folder.

    .venv/bin/python benchmarks/bench_data.py [--videos 6] [--train-items 24] [--test-items 6]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
from torch.utils.data import DataLoader

from aptune.data import VideoDataset, decode


def make_clip(path: Path, seconds=10, fps=25, w=320, h=240, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.gop_size = 2 * fps
        s.options = {"preset": "veryfast", "crf": "23"}
        for i in range(seconds * fps):
            frame = np.roll(base, (i * 2, i * 3), axis=(0, 1))  # moving texture
            for pkt in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)


class FullDecodeDataset(VideoDataset):
    """Baseline: decode every frame, then index (what naive loaders do)."""

    def __getitem__(self, index):
        orig = decode.read_sampled

        def full(path, choose, threads=0):
            frames = decode.decode_all(path, threads)
            idx = [int(i) for i in choose(len(frames))]
            return frames[idx], idx

        import aptune.data.datasets as D
        D.read_sampled = full
        try:
            return super().__getitem__(index)
        finally:
            D.read_sampled = orig


def rate(ds, items, workers):
    loader = DataLoader(torch.utils.data.Subset(ds, list(range(items))), batch_size=1,
                        num_workers=workers, shuffle=False)
    it = iter(loader)
    next(it)  # warm-up (worker start, first decode)
    t = time.perf_counter()
    n = 1
    for _ in it:
        n += 1
    return (n - 1) / (time.perf_counter() - t)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=6)
    p.add_argument("--train-items", type=int, default=24)
    p.add_argument("--test-items", type=int, default=6)
    p.add_argument("--workers", default="0,1,2")
    a = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        for k in range(a.videos):
            make_clip(d / f"v{k}.mp4", seed=k)
        reps = max(a.train_items, a.test_items) // a.videos + 1
        entries = [(f"v{k}.mp4", k) for k in range(a.videos)] * reps
        common = dict(root=d, num_frames=16, sampling_rate=4, img_size=224)
        rows = []
        for workers in [int(w) for w in a.workers.split(",")]:
            for mode, items in (("train", a.train_items), ("test", a.test_items)):
                ours = rate(VideoDataset(entries, mode=mode, **common), items, workers)
                base = rate(FullDecodeDataset(entries, mode=mode, **common), items, workers)
                rows.append((mode, workers, ours, base))
                print(f"{mode:5s} workers={workers}: seek+partial {ours:7.2f}  full-decode {base:7.2f}"
                      f"  ratio {ours / base:5.2f}x", file=sys.stderr, flush=True)
    print("\n| clips | workers | seek + partial decode (items/s) | decode all, then index (items/s) | ratio |")
    print("|---|---|---|---|---|")
    for mode, w, ours, base in rows:
        what = "train 16x4@224" if mode == "train" else "test 5x3 views"
        print(f"| {what} | {w} | {ours:.2f} | {base:.2f} | {ours / base:.2f}x |")
    print(f"\n{a.videos} videos of 10 s 320x240 H.264 (keyframe every 2 s); "
          f"{torch.get_num_threads()} torch thread(s) in the main process. "
          "A test item is one video's 15 views.")


if __name__ == "__main__":
    main()
