"""Uncertainty of a measured top-1: percentile bootstrap intervals.

    bootstrap_ci(correct)                    over test videos (one trained model)
    bootstrap_ci_seeds(correct_by_seed)      over training seeds and test videos (several trained models)

`correct` holds 1/0 per test video (`video_correct` of the multi-view protocol). Both return the
(1 - level)/2 and (1 + level)/2 quantiles (numpy's default linear interpolation) of the resampled
mean top-1 in percent, from numpy's Generator seeded with `seed`, so a table is reproducible.
"""
from __future__ import annotations

import numpy as np


def _quantiles(means: np.ndarray, level: float) -> tuple[float, float]:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def bootstrap_ci(correct, num_resamples: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of top-1 (percent) over test videos: each resample draws
    len(correct) videos with replacement."""
    c = np.asarray(correct, dtype=np.float64)
    if c.ndim != 1 or len(c) == 0:
        raise ValueError(f"bootstrap_ci: need a non-empty 1-D list of 0/1 per video, got shape {c.shape}")
    rng = np.random.default_rng(seed)
    means = 100.0 * c[rng.integers(0, len(c), size=(num_resamples, len(c)))].mean(axis=1)
    return _quantiles(means, level)


def bootstrap_ci_seeds(correct_by_seed, num_resamples: int = 2000, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float]:
    """Two-level percentile bootstrap of the mean top-1 (percent) over S training seeds x N test videos.

    `correct_by_seed`: S lists of N 0/1 values, the same N test videos in the same order for every
    seed. Each resample draws S seeds with replacement, then N videos with replacement, and takes the
    mean of the drawn seeds' results on the drawn videos. The videos are drawn once per resample and
    shared by the drawn seeds, because every seed was tested on the same videos (a hard video is hard
    for all of them); so the interval holds both the training randomness and the test-set sampling."""
    c = np.asarray(correct_by_seed, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] == 0 or c.shape[1] == 0:
        raise ValueError(f"bootstrap_ci_seeds: need S >= 1 seeds x N >= 1 videos of 0/1, got shape {c.shape}")
    S, N = c.shape
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, S, size=(num_resamples, S))                  # (B, S)
    videos = rng.integers(0, N, size=(num_resamples, N))                 # (B, N)
    per_seed = c[:, videos].mean(axis=2)                                 # (S, B): each seed on each video draw
    means = 100.0 * np.take_along_axis(per_seed.T, seeds, axis=1).mean(axis=1)    # (B,)
    return _quantiles(means, level)
