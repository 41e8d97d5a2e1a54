"""One interleaved timer: the build's candidate selection and the benchmark scripts share it.

Subjects run in rounds, one after another in each round, so that whatever else loads the machine
weighs on every subject alike; medians over rounds are what to compare, within one call only.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["Timings", "measure_interleaved"]

F = TypeVar("F")


@dataclass(frozen=True, slots=True)
class Timings:
    """Latencies (ms) of each subject, in the order the subjects were given."""

    samples_ms: tuple[tuple[float, ...], ...]
    rounds: int

    @property
    def medians_ms(self) -> tuple[float, ...]:
        """The median latency (ms) of each subject."""
        return tuple(statistics.median(s) for s in self.samples_ms)


def _repeats(call: Callable[[F], object], feed: F, round_s: float, cap: int) -> int:
    """How many calls of ``call`` fill about ``round_s`` seconds (one call timed)."""
    start = time.perf_counter()
    call(feed)
    return max(1, min(cap, int(round_s / max(time.perf_counter() - start, 1e-4))))


def measure_interleaved(
    calls: Sequence[Callable[[F], object]],
    feeds: Sequence[F],
    *,
    warmup: int = 3,
    rounds: int = 5,
    max_rounds: int | None = None,
    budget_s: float = 0.0,
    round_s: float | None = None,
    max_repeats: int = 20,
    rotate: bool = False,
) -> Timings:
    """Time each of ``calls`` on ``feeds`` (cycled), interleaved in rounds; latencies in ms.

    Each call first runs ``warmup`` times untimed. Then rounds run until at least ``rounds`` are
    done and ``budget_s`` seconds have passed (stopping at ``max_rounds``, when given). In a round
    each call runs once, or, with ``round_s``, as many times as fill about that many seconds (at
    most ``max_repeats``), so that fast subjects give as many samples as slow ones. ``rotate``
    starts each round at the next subject, so no subject always runs right after the same one.
    """
    if not calls or not feeds:
        raise ValueError("measure_interleaved needs at least one call and one feed")
    for call in calls:
        for i in range(warmup):
            call(feeds[i % len(feeds)])
    reps = [1 if round_s is None else _repeats(c, feeds[0], round_s, max_repeats) for c in calls]
    samples: list[list[float]] = [[] for _ in calls]
    order = list(range(len(calls)))
    clock = time.perf_counter_ns
    deadline = clock() + int(budget_s * 1e9)
    done = 0
    while done < rounds or clock() < deadline:
        if max_rounds is not None and done >= max_rounds:
            break
        shift = done % len(order) if rotate else 0
        for i in order[shift:] + order[:shift]:
            call = calls[i]
            for r in range(reps[i]):
                # Every subject sees the same feeds in the same round.
                feed = feeds[(done * reps[i] + r) % len(feeds)]
                start = clock()
                call(feed)
                samples[i].append((clock() - start) / 1e6)
        done += 1
    return Timings(tuple(tuple(s) for s in samples), done)
