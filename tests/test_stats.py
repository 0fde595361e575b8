"""The bootstrap intervals behind every table's [low, high]: against a plain-code percentile bootstrap
(the same generator, one resample at a time) and against the normal approximation of a proportion.

The data are chosen so that the mistakes one could make give other numbers: enough videos and an
odd number of resamples that the 2.5% quantile falls between two different order statistics (so
numpy's method="lower" differs from the linear default), and a 90% interval is visibly narrower."""
import math

import numpy as np
import pytest

from aptune.stats import bootstrap_ci, bootstrap_ci_seeds

CORRECT = [int(v) for v in (np.random.default_rng(11).random(157) < 0.61)]     # 157 videos, about 61% right


def plain_percentile(values: list[float], q: float) -> float:
    """numpy's default (linear) quantile, by hand: interpolate between the order statistics around q (n - 1)."""
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo = math.floor(pos)
    return v[lo] + (pos - lo) * (v[min(lo + 1, len(v) - 1)] - v[lo])


def plain_bootstrap(correct, resamples: int, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    n, means = len(correct), []
    for _ in range(resamples):
        picks = rng.integers(0, n, size=n)
        means.append(100.0 * sum(correct[i] for i in picks) / n)
    return means


def test_bootstrap_ci_is_the_95_percent_percentile_interval_by_hand():
    resamples, seed = 999, 3
    means = plain_bootstrap(CORRECT, resamples, seed)
    want = (plain_percentile(means, 0.025), plain_percentile(means, 0.975))
    # the data discriminate: numpy's "lower" method and a 90% interval give other bounds here
    lower = sorted(means)[math.floor(0.025 * (resamples - 1))]
    assert abs(lower - want[0]) > 0.05
    assert plain_percentile(means, 0.05) > want[0] + 0.5 and plain_percentile(means, 0.95) < want[1] - 0.5
    got = bootstrap_ci(CORRECT, num_resamples=resamples, seed=seed)
    assert got == pytest.approx(want, abs=1e-9)


def test_bootstrap_ci_width_matches_the_normal_approximation():
    """Independent of the generator: for 4,000 videos at 60% the 95% interval is p +- 1.96 sqrt(p (1-p) / n)
    (2.15 points); a 90% interval would be 1.80."""
    n = 4000
    correct = [1] * (6 * n // 10) + [0] * (4 * n // 10)
    half = 100 * 1.959964 * math.sqrt(0.6 * 0.4 / n)
    low, high = bootstrap_ci(correct, num_resamples=4000, seed=0)
    assert (high - low) / 2 == pytest.approx(half, abs=0.12)
    assert (low + high) / 2 == pytest.approx(60.0, abs=0.15)


def test_bootstrap_ci_edge_cases():
    assert bootstrap_ci([1] * 20) == (100.0, 100.0) and bootstrap_ci([0] * 20) == (0.0, 0.0)
    with pytest.raises(ValueError):
        bootstrap_ci([])
    with pytest.raises(ValueError):
        bootstrap_ci_seeds([[]])


def test_two_level_bootstrap_by_hand():
    """Seeds drawn with replacement, then one draw of videos shared by the drawn seeds (every seed was tested
    on the same videos), restated as a loop with the same generator calls."""
    rng = np.random.default_rng(7)
    by_seed = [[int(v) for v in rng.random(101) < p] for p in (0.45, 0.55, 0.7)]
    resamples, seed = 999, 4
    g = np.random.default_rng(seed)
    seed_draws = g.integers(0, 3, size=(resamples, 3))
    video_draws = g.integers(0, 101, size=(resamples, 101))
    means = []
    for b in range(resamples):
        total = sum(by_seed[s][v] for s in seed_draws[b] for v in video_draws[b])
        means.append(100.0 * total / (3 * 101))
    want = (plain_percentile(means, 0.025), plain_percentile(means, 0.975))
    assert sorted(means)[math.floor(0.025 * (resamples - 1))] < want[0] - 0.05     # "lower" would differ
    assert bootstrap_ci_seeds(by_seed, num_resamples=resamples, seed=seed) == pytest.approx(want, abs=1e-9)


def test_two_level_interval_holds_the_seed_spread():
    """Three seeds that disagree by 20 points on the same 600 videos: the interval over seeds x videos is far
    wider than the one over videos alone, and spans most of the seeds' range (50-70)."""
    n = 600
    by_seed = [[1] * (k * n // 100) + [0] * (n - k * n // 100) for k in (50, 60, 70)]
    low, high = bootstrap_ci_seeds(by_seed, num_resamples=3000)
    v_low, v_high = bootstrap_ci([v for row in by_seed for v in row], num_resamples=3000)
    assert high - low > 2.5 * (v_high - v_low)
    assert low < 55 and high > 65 and 45 < low and high < 75
    # identical seeds: no seed spread, the interval is the one over videos (the same shape)
    same = bootstrap_ci_seeds([by_seed[1]] * 3, num_resamples=3000)
    one = bootstrap_ci(by_seed[1], num_resamples=3000)
    assert abs((same[1] - same[0]) - (one[1] - one[0])) < 1.0
