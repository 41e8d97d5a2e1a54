"""The timed loops: one closed-loop stream, N concurrent streams, and Poisson arrivals.

Each loop runs for one measurement window and returns the latencies it saw. The timed region is
the runner call alone, between two ``perf_counter_ns`` reads; the garbage collector is paused
during a window (as ``timeit`` does) so that a collection does not land inside one inference.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import itertools
import logging
import math
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from duh.errors import ConfigError

__all__ = [
    "Rejected",
    "Runner",
    "Warmup",
    "Window",
    "closed_loop",
    "gc_paused",
    "poisson_loop",
    "streams_loop",
    "warm_up",
]

log = logging.getLogger(__name__)

_PR_SET_TIMERSLACK = 29  # prctl option, <linux/prctl.h>

# Runs one inference on a prepared payload; must be safe to call from several threads.
Runner = Callable[[Any], object]


class Rejected(Exception):
    """Raised by a runner when the system under test refused a request as overloaded."""


@dataclass(frozen=True, slots=True)
class Window:
    """What one measurement window saw."""

    latencies_ns: np.ndarray
    elapsed_s: float
    rejected: int = 0
    dropped: int = 0
    offered_qps: float | None = None

    @property
    def completed(self) -> int:
        """Inferences that finished (rejected and dropped ones excluded)."""
        return int(self.latencies_ns.size)

    @property
    def median_ms(self) -> float:
        """The window's median latency in milliseconds (NaN when nothing completed)."""
        if self.latencies_ns.size == 0:
            return math.nan
        return float(np.median(self.latencies_ns)) / 1e6


@dataclass(frozen=True, slots=True)
class Warmup:
    """Warm-up before measuring: at least ``runs`` inferences and at least ``seconds``."""

    runs: int = 1
    seconds: float = 0.5

    @classmethod
    def parse(cls, text: str) -> Warmup:
        """``"20"`` is 20 runs, ``"2s"``/``"500ms"`` a duration (at least one run), ``"0"`` none."""
        value = text.strip().lower()
        match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s)?", value)
        if match is None:
            raise ConfigError(
                f"--warmup {text!r} is neither a run count (20) nor a duration (2s, 500ms)"
            )
        number, unit = float(match.group(1)), match.group(2)
        if unit is None:
            if not number.is_integer():
                raise ConfigError(
                    f"--warmup {text!r}: a run count must be whole; add s for seconds"
                )
            return cls(runs=int(number), seconds=0.0)
        seconds = number / 1000 if unit == "ms" else number
        return cls(runs=1 if seconds > 0 else 0, seconds=seconds)

    def describe(self) -> str:
        """How people write it: ``20 runs`` or ``0.5 s``."""
        if self.seconds > 0:
            return f"{self.seconds:g} s"
        return f"{self.runs} runs"


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The garbage collector off for a timed window (as ``timeit`` does), and back on after if
    it was on before."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def warm_up(run: Runner, payloads: Sequence[Any], warmup: Warmup, streams: int = 1) -> int:
    """Run until the warm-up's count and duration are both reached; returns the runs made.

    With several streams, a short concurrent burst follows so that per-thread engine resources
    (infer requests, arenas) exist before the first window.
    """
    count, start = 0, time.perf_counter()
    while count < warmup.runs or time.perf_counter() - start < warmup.seconds:
        try:
            run(payloads[count % len(payloads)])
        except Rejected:
            pass
        count += 1
    if streams > 1 and (warmup.runs or warmup.seconds):
        burst = streams_loop(run, payloads, streams, min(max(warmup.seconds, 0.05), 0.5), streams)
        count += burst.completed + burst.rejected
    return count


def _timed_runs(
    run: Runner, payloads: Sequence[Any], first: int, seconds: float, min_runs: int
) -> tuple[int, int, list[int], int]:
    """Run for ``seconds`` (and ``min_runs``), cycling payloads from ``first``.

    Returns start and end (ns), each accepted run's latency (ns), and the rejected count.
    """
    clock = time.perf_counter_ns
    times: list[int] = []
    append = times.append
    count = rejected = 0
    n = len(payloads)
    start = end = clock()
    deadline = start + int(seconds * 1e9)
    while end < deadline or count < min_runs:
        payload = payloads[(first + count) % n]
        t0 = clock()
        try:
            run(payload)
        except Rejected:
            rejected += 1
            end = clock()
            count += 1
            continue
        end = clock()
        append(end - t0)
        count += 1
    return start, end, times, rejected


def closed_loop(run: Runner, payloads: Sequence[Any], seconds: float, min_runs: int) -> Window:
    """One request after another for ``seconds`` (and at least ``min_runs`` requests)."""
    with gc_paused():
        start, end, times, rejected = _timed_runs(run, payloads, 0, seconds, min_runs)
    return Window(np.asarray(times, dtype=np.int64), (end - start) / 1e9, rejected)


def streams_loop(
    run: Runner, payloads: Sequence[Any], streams: int, seconds: float, min_runs: int
) -> Window:
    """``streams`` closed loops at once, each issuing its next request when the last returns."""
    if streams <= 1:
        return closed_loop(run, payloads, seconds, min_runs)
    barrier = threading.Barrier(streams)
    per_stream = max(1, math.ceil(min_runs / streams))
    results: list[tuple[int, int, list[int], int] | BaseException | None] = [None] * streams

    def stream(index: int) -> None:
        try:
            barrier.wait()
            results[index] = _timed_runs(run, payloads, index, seconds, per_stream)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread below
            barrier.abort()
            results[index] = exc

    threads = [threading.Thread(target=stream, args=(i,), daemon=True) for i in range(streams)]
    with gc_paused():
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    failures = [r for r in results if isinstance(r, BaseException)]
    # A broken barrier only follows another stream's failure: raise the original one.
    real = [f for f in failures if not isinstance(f, threading.BrokenBarrierError)]
    if real or failures:
        raise (real or failures)[0]
    done = [r for r in results if isinstance(r, tuple)]
    start = min(d[0] for d in done)
    end = max(d[1] for d in done)
    latencies = np.concatenate([np.asarray(d[2], dtype=np.int64) for d in done])
    return Window(latencies, (end - start) / 1e9, sum(d[3] for d in done))


def _tight_timer() -> None:
    """Ask Linux for a 1 ns timer slack on this thread: sleeps then overshoot by ~30 µs, not the
    default slack's ~90 µs, which would count as latency in the server scenario."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0)
    except (OSError, AttributeError):
        log.debug("could not lower the timer slack; arrival times are less precise")


def poisson_loop(
    run: Runner,
    payloads: Sequence[Any],
    qps: float,
    seconds: float,
    workers: int,
    seed: int = 0,
    drain_s: float = 10.0,
) -> Window:
    """Requests arriving as a Poisson process at ``qps`` for ``seconds``, served by ``workers``.

    A request's latency runs from its scheduled arrival to its completion, so time spent waiting
    for a busy worker counts (an open loop, like MLPerf's server scenario). A free worker takes
    the next request in arrival order and sleeps until it arrives: first-come first-served over
    ``workers`` servers, with no hand-off between threads adding to the latency. A request not
    started within ``drain_s`` of its arrival is dropped and counted.
    """
    if qps <= 0:
        raise ConfigError(f"--qps must be positive, got {qps:g}")
    rng = np.random.default_rng(seed)
    expected = int(qps * seconds * 1.5) + 32
    offsets = np.cumsum(rng.exponential(1e9 / qps, size=expected)).astype(np.int64)
    offsets = offsets[offsets < int(seconds * 1e9)]
    if offsets.size == 0:
        offsets = np.zeros(1, dtype=np.int64)
    arrivals = offsets.tolist()
    total = len(arrivals)
    taken = itertools.count()  # next() on it is atomic under the GIL: each request goes once
    lat: list[list[int]] = [[] for _ in range(workers)]
    counts = [[0, 0] for _ in range(workers)]  # rejected, dropped
    ends = [0] * workers
    errors: list[BaseException] = []
    clock = time.perf_counter_ns
    drain_ns = int(drain_s * 1e9)
    ready = threading.Barrier(workers + 1)
    go = threading.Event()
    origin = [0]

    def worker(index: int) -> None:
        _tight_timer()
        mine, tally = lat[index], counts[index]
        n = len(payloads)
        ready.wait()
        go.wait()
        start = origin[0]
        while not errors:
            number = next(taken)
            if number >= total:
                return
            scheduled = start + arrivals[number]
            delay = scheduled - clock()
            if delay > 0:
                time.sleep(delay / 1e9)
            elif -delay > drain_ns:
                tally[1] += 1
                continue
            try:
                run(payloads[number % n])
            except Rejected:
                tally[0] += 1
                continue
            except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread below
                errors.append(exc)
                return
            ends[index] = clock()
            mine.append(ends[index] - scheduled)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(workers)]
    with gc_paused():
        for t in threads:
            t.start()
        ready.wait()  # every worker is up before the clock starts
        origin[0] = clock() + 200_000
        go.set()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    start = origin[0]
    end = max([start, *ends])
    latencies = np.concatenate([np.asarray(x, dtype=np.int64) for x in lat])
    return Window(
        latencies,
        max(end - start, 1) / 1e9,
        rejected=sum(c[0] for c in counts),
        dropped=sum(c[1] for c in counts),
        offered_qps=total / seconds,
    )
