"""The statistics against inputs whose answers are known."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from duh.bench import percentile, summarize, window_stable
from duh.bench._stats import relative_spread


def test_percentiles_of_1_to_100_interpolate_linearly() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 90) == pytest.approx(90.1)
    assert percentile(values, 95) == pytest.approx(95.05)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile(values, 0) == 1 and percentile(values, 100) == 100


def test_percentiles_agree_with_the_standard_librarys_inclusive_quantiles() -> None:
    values = list(np.random.default_rng(3).exponential(2.0, size=1001))
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    for q in (50, 90, 95, 99):
        assert percentile(values, q) == pytest.approx(cuts[q - 1], rel=1e-12)


def test_summarize_known_sample() -> None:
    stats = summarize([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0])
    assert stats.count == 8
    assert stats.min_ms == 2.0 and stats.max_ms == 9.0
    assert stats.mean_ms == pytest.approx(5.0)
    # sample standard deviation (n - 1): sqrt(32 / 7)
    assert stats.std_ms == pytest.approx(math.sqrt(32 / 7))
    assert stats.cv == pytest.approx(math.sqrt(32 / 7) / 5.0)
    assert stats.p50_ms == pytest.approx(4.5)
    assert stats.p90_ms == pytest.approx(7.6)


def test_summarize_single_value_and_empty() -> None:
    one = summarize([3.0])
    assert (one.p50_ms, one.p99_ms, one.std_ms, one.cv) == (3.0, 3.0, 0.0, 0.0)
    empty = summarize([])
    assert empty.count == 0 and math.isnan(empty.p50_ms)


def test_relative_spread_is_the_largest_distance_from_the_mean() -> None:
    assert relative_spread([9.0, 10.0, 11.0]) == pytest.approx(0.1)
    assert relative_spread([5.0, 5.0]) == 0.0


def test_windows_are_stable_only_when_the_last_ones_agree() -> None:
    assert not window_stable([10.0, 10.1], last=3, tolerance=0.05)  # too few windows
    assert window_stable([30.0, 10.0, 10.2, 9.9], last=3, tolerance=0.05)  # drift ended
    assert not window_stable([10.0, 10.2, 12.0], last=3, tolerance=0.05)
    assert window_stable([10.0, 10.2, 12.0], last=3, tolerance=0.12)  # spread 11.8%
