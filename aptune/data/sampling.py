"""Temporal sampling: which frames make each clip. Pure functions on ints, returning frame
indices in [0, n) for a video of n frames.

The rules are the APT authors' (wgcban/apt, a fork of VideoMAE's loaders: `kinetics.py`
VideoClsDataset for dense clips, `ssv2.py` SSVideoClsDataset for segments, frames read with
decord `get_batch`), so that test top-1 compares with the paper. Every `int()` below
truncates as theirs does; `np.linspace(...).astype(int64)` is used where they use it.

Dense clips (UCF101, HMDB51, Kinetics): T frames, sampling rate r.
  - train: a window of T*r frames ending at a random `end` in [T*r, n); the T frames are
    linspace(end - T*r, end, T) truncated, the last clipped to end - 1 (so the stride is
    T*r/(T-1), not r). A video of n <= T*r frames: linspace(0, n, n // r), then n repeated
    up to T, all clipped to n - 1.
  - test: the strided buffer range(0, n, r), its last entry repeated until there are T;
    clip k of K is buffer[s_k : s_k + T] with s_k = int(k * (len(buffer) - T) / (K - 1)),
    so clips start at multiples of r. K = 1 (their code divides by zero there): the centre.
Segments (SSv2): T segments.
  - train: avg = n // T; segment t gives frame t*avg + randint(avg) (the last n % T frames
    are never used); a video of fewer than T frames gives T copies of frame 0.
  - test: tick = n / T; view 0 takes int(tick * x), view 1 int(tick / 2 + tick * x),
    x < T (their sorted, interleaved list split into even and odd positions). View v of
    V > 2 takes int(tick * v / V + tick * x), aptune's extension (theirs handles V <= 2).
Validation (one view) draws its window or segments like training (see datasets.py).

A video never fails for being short; `min_frames` says when its clips start repeating
frames (`aptune check-videos` reports those as too short).
"""
from __future__ import annotations

import random

import numpy as np


def _check(video_frames: int, num_frames: int, stride: int = 1) -> None:
    if video_frames < 1:
        raise ValueError(f"video has {video_frames} frames; need at least 1")
    if num_frames < 1 or stride < 1:
        raise ValueError(f"num_frames ({num_frames}) and stride ({stride}) must be >= 1")


def min_frames(num_frames: int, stride: int, sampling: str = "dense") -> int:
    """Fewest video frames for which no test view repeats a frame: dense (T-1)*r + 1 (below
    it the strided buffer is padded with its last frame), segment T (below it segments hold
    less than one frame and training takes frame 0 T times). Dense training already
    stretches its window over the whole video from T*r frames down, repeating the last
    frame once between (T-1)*r and T*r - 1 frames."""
    if sampling == "segment":
        return num_frames
    return (num_frames - 1) * stride + 1


def dense_train(video_frames: int, num_frames: int, stride: int, rng: random.Random) -> list[int]:
    """One training clip: a random window of T*r frames, T frames by linspace (see module
    doc). `rng.randrange(T*r, n)` draws the window's end as np.random.randint(T*r, n)."""
    _check(video_frames, num_frames, stride)
    n, T, window = video_frames, num_frames, num_frames * stride
    if n <= window:
        spread = np.linspace(0, n, num=n // stride)  # (n // r,), then padded to (T,)
        idx = np.concatenate([spread, np.full(T - n // stride, float(n))])
        return np.clip(idx, 0, n - 1).astype(np.int64).tolist()
    end = rng.randrange(window, n)
    start = end - window
    return np.clip(np.linspace(start, end, num=T), start, end - 1).astype(np.int64).tolist()


def strided_buffer(video_frames: int, num_frames: int, stride: int) -> list[int]:
    """Frames the dense test decodes: 0, r, 2r, ... < n, the last repeated up to T."""
    _check(video_frames, num_frames, stride)
    buf = list(range(0, video_frames, stride))
    return buf + [buf[-1]] * (num_frames - len(buf))


def dense_test_starts(video_frames: int, num_frames: int, stride: int, num_clips: int) -> list[int]:
    """Start of each of the K test clips, in units of the strided buffer (multiply by r for
    a frame index): int(k * (len(buffer) - T) / (K - 1)); K = 1: the centre."""
    room = len(strided_buffer(video_frames, num_frames, stride)) - num_frames  # >= 0
    if num_clips == 1:
        return [room // 2]
    step = room / (num_clips - 1)
    return [int(k * step) for k in range(num_clips)]


def dense_test(video_frames: int, num_frames: int, stride: int, num_clips: int) -> list[list[int]]:
    """K test clips, each a list of T frame indices (see dense_test_starts)."""
    buf = strided_buffer(video_frames, num_frames, stride)
    return [buf[s:s + num_frames]
            for s in dense_test_starts(video_frames, num_frames, stride, num_clips)]


def segment_train(video_frames: int, num_segments: int, rng: random.Random) -> list[int]:
    """One random frame in each of T segments of n // T frames (T copies of frame 0 when
    n < T); `rng.randrange(avg)` draws as np.random.randint(avg)."""
    _check(video_frames, num_segments)
    avg = video_frames // num_segments
    if avg == 0:
        return [0] * num_segments
    return [t * avg + rng.randrange(avg) for t in range(num_segments)]


def segment_test(video_frames: int, num_segments: int, num_views: int) -> list[list[int]]:
    """V test views of T frames: view v takes int(tick * v / V + tick * x), tick = n / T
    (V = 2: int(tick * x) and int(tick / 2 + tick * x), bit for bit the authors' values)."""
    _check(video_frames, num_segments)
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    tick = video_frames / num_segments
    return [[int(tick * v / num_views + tick * x) for x in range(num_segments)]
            for v in range(num_views)]
