"""Latency statistics and the stability rule for measurement windows.

Percentiles use linear interpolation between the closest ranks (numpy's default, the same rule
as ``statistics.quantiles(method="inclusive")``), the standard deviation is the sample one
(n - 1), and the coefficient of variation is std / mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["LatencyStats", "percentile", "relative_spread", "summarize", "window_stable"]


@dataclass(frozen=True, slots=True)
class LatencyStats:
    """Summary of latency samples, in milliseconds."""

    count: int
    min_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    std_ms: float
    cv: float

    def to_json(self) -> dict[str, float | int]:
        """Every field, rounded to nanoseconds."""
        return {k: (v if isinstance(v, int) else round(v, 6)) for k, v in asdict(self).items()}


def percentile(values: Sequence[float] | np.ndarray, q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation; NaN for no values."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return math.nan
    return float(np.percentile(array, q))


def summarize(samples_ms: Sequence[float] | np.ndarray) -> LatencyStats:
    """Min, percentiles, max, mean, sample std and coefficient of variation of ``samples_ms``."""
    array = np.asarray(samples_ms, dtype=np.float64)
    if array.size == 0:
        nan = math.nan
        return LatencyStats(0, nan, nan, nan, nan, nan, nan, nan, nan, nan)
    p50, p90, p95, p99 = (float(v) for v in np.percentile(array, [50, 90, 95, 99]))
    mean = float(array.mean())
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return LatencyStats(
        count=int(array.size),
        min_ms=float(array.min()),
        p50_ms=p50,
        p90_ms=p90,
        p95_ms=p95,
        p99_ms=p99,
        max_ms=float(array.max()),
        mean_ms=mean,
        std_ms=std,
        cv=std / mean if mean > 0 else math.nan,
    )


def relative_spread(values: Sequence[float]) -> float:
    """The largest distance of any value from their mean, relative to the mean."""
    if not values:
        return math.nan
    mean = sum(values) / len(values)
    if mean <= 0:
        return 0.0 if all(v == mean for v in values) else math.inf
    return max(abs(v - mean) for v in values) / mean


def window_stable(medians: Sequence[float], last: int, tolerance: float) -> bool:
    """Whether the ``last`` window medians all lie within ``tolerance`` of their mean.

    The rule perf_analyzer applies to its measurement windows: with fewer than ``last`` windows
    nothing is stable yet.
    """
    if last < 1 or len(medians) < last:
        return False
    return relative_spread(list(medians[-last:])) <= tolerance
