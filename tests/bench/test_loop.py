"""The timed loops with plain Python runners: counts, rejections, errors, warm-up parsing."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest

from duh.bench import Warmup
from duh.bench._loop import (
    Rejected,
    closed_loop,
    gc_paused,
    poisson_loop,
    streams_loop,
    warm_up,
)
from duh.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "runs", "seconds"),
    [("20", 20, 0.0), ("2s", 1, 2.0), ("500ms", 1, 0.5), ("0", 0, 0.0), ("1.5 s", 1, 1.5)],
)
def test_warmup_parses_counts_and_durations(text: str, runs: int, seconds: float) -> None:
    assert Warmup.parse(text) == Warmup(runs, seconds)


@pytest.mark.parametrize("text", ["fast", "2.5", "-1", "3m"])
def test_warmup_rejects_nonsense(text: str) -> None:
    with pytest.raises(ConfigError, match="--warmup"):
        Warmup.parse(text)


def test_warm_up_runs_the_count() -> None:
    calls: list[int] = []
    assert warm_up(calls.append, [1, 2], Warmup(7, 0.0)) == 7
    assert calls == [1, 2, 1, 2, 1, 2, 1]


def test_closed_loop_records_one_latency_per_run_and_cycles_payloads() -> None:
    seen: list[int] = []
    window = closed_loop(seen.append, [0, 1, 2], seconds=0.0, min_runs=9)
    assert window.completed == 9 and window.latencies_ns.dtype == np.int64
    assert seen == [0, 1, 2] * 3
    assert (window.latencies_ns > 0).all()


def test_rejected_requests_are_counted_not_timed() -> None:
    def run(payload: int) -> None:
        if payload % 2:
            raise Rejected("busy")

    window = closed_loop(run, [0, 1], seconds=0.0, min_runs=10)
    assert (window.completed, window.rejected) == (5, 5)


def test_streams_run_concurrently_on_separate_threads() -> None:
    names: set[str] = set()
    lock = threading.Lock()

    def run(_: object) -> None:
        with lock:
            names.add(threading.current_thread().name)

    window = streams_loop(run, [None], streams=3, seconds=0.0, min_runs=30)
    assert window.completed >= 30 and len(names) == 3


def test_a_failing_runner_fails_the_window() -> None:
    def run(_: object) -> None:
        raise ValueError("engine exploded")

    with pytest.raises(ValueError, match="exploded"):
        streams_loop(run, [None], streams=2, seconds=0.0, min_runs=2)
    with pytest.raises(ValueError, match="exploded"):
        poisson_loop(run, [None], qps=1000, seconds=0.05, workers=2)


def test_poisson_arrivals_are_seeded_and_all_served() -> None:
    first = poisson_loop(lambda _: None, [None], qps=2000, seconds=0.1, workers=2, seed=5)
    again = poisson_loop(lambda _: None, [None], qps=2000, seconds=0.1, workers=2, seed=5)
    # About qps x seconds = 200 arrivals; the same seed gives the same number.
    assert first.completed == again.completed
    assert 120 < first.completed < 280
    assert first.dropped == 0 and first.rejected == 0
    assert first.offered_qps == pytest.approx(first.completed / 0.1)


def test_poisson_latency_includes_queueing_behind_a_busy_worker() -> None:
    gate = threading.Event()

    def run(_: object) -> None:
        gate.wait(0.002)  # a 2 ms service time, far beyond the arrival gap at 5000 QPS

    window = poisson_loop(run, [None], qps=5000, seconds=0.02, workers=1, seed=1)
    lat_ms = np.sort(window.latencies_ns) / 1e6
    # Requests queue: the last ones waited for many earlier services.
    assert lat_ms[-1] > 5 * lat_ms[0]


def test_poisson_rejects_a_non_positive_rate() -> None:
    with pytest.raises(ConfigError, match="--qps must be positive"):
        poisson_loop(lambda _: None, [None], qps=0, seconds=1, workers=1)


def test_the_collector_is_off_inside_a_window_and_as_it_was_after() -> None:
    seen: list[bool] = []
    closed_loop(lambda _: seen.append(gc.isenabled()), [None], seconds=0.0, min_runs=3)
    assert seen == [False] * 3 and gc.isenabled()
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("a runner failed")
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # it was off before: it stays off
    finally:
        gc.enable()
