"""The batching policy as a pure function: which queued requests form the next batch, or how long
to wait. No threads, no event loop, no clock: the time is an argument."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import pytest

from duh.serve._batching import MAX_SKIPPED, BatchConfig, Selection, select_batch

A, B = (3,), (5,)  # two non-batch shapes: only requests of one shape share a batch


@dataclass(frozen=True)
class Req:
    rows: int
    key: Hashable = A
    enqueued: float = 0.0


def _queue(*rows: int, key: Hashable = A, at: float = 0.0) -> list[Req]:
    return [Req(r, key, at) for r in rows]


def test_an_empty_queue_waits_for_a_request() -> None:
    assert select_batch([], BatchConfig(), 5.0) == Selection(take=(), wait_s=None)


def test_without_a_delay_the_oldest_and_later_ones_of_its_shape_go_at_once() -> None:
    queue = [Req(2), Req(1, B), Req(3), Req(2, B), Req(1)]
    assert select_batch(queue, BatchConfig(max_batch_size=8), 0.0).take == (0, 2, 4)


def test_the_batch_stops_at_the_row_limit() -> None:
    queue = _queue(3, 3, 2, 1)
    assert select_batch(queue, BatchConfig(max_batch_size=8), 0.0).take == (0, 1, 2)


def test_a_request_that_would_overflow_opens_the_next_batch_and_nothing_passes_it() -> None:
    queue = _queue(3, 6, 1)  # 3 + 6 > 8: the 6 waits, and the 1 behind it may not jump ahead
    assert select_batch(queue, BatchConfig(max_batch_size=8), 0.0).take == (0,)
    assert select_batch(queue[1:], BatchConfig(max_batch_size=8), 0.0).take == (0, 1)


def test_a_request_of_the_limit_or_more_goes_alone() -> None:
    assert select_batch(_queue(20, 1), BatchConfig(max_batch_size=8), 0.0).take == (0,)


def test_no_batching_takes_one_request_at_a_time() -> None:
    config = BatchConfig(max_batch_size=0, max_queue_delay_ms=50)
    assert select_batch(_queue(1, 1, 1), config, 0.0) == Selection(take=(0,))


def test_with_a_delay_a_small_batch_waits_until_the_oldest_requests_deadline() -> None:
    config = BatchConfig(max_batch_size=8, max_queue_delay_ms=20)
    queue = [Req(1, A, 10.000), Req(2, A, 10.005), Req(8, B, 10.006)]  # other shapes do not count
    first = select_batch(queue, config, now=10.008)
    assert first.take == () and first.wait_s == pytest.approx(0.012)
    assert select_batch(queue, config, now=10.021).take == (0, 1)  # past the deadline


def test_with_a_delay_a_full_batch_goes_at_once() -> None:
    config = BatchConfig(max_batch_size=4, max_queue_delay_ms=1000)
    assert select_batch(_queue(1, 2, 1, 1), config, now=0.0).take == (0, 1, 2)


def test_with_a_delay_a_batch_goes_when_it_reaches_the_largest_preferred_size() -> None:
    config = BatchConfig(max_batch_size=32, max_queue_delay_ms=1000, preferred_batch_sizes=(8, 4))
    assert select_batch(_queue(2, 1), config, now=0.0).take == ()  # 3: no preferred size yet
    assert select_batch(_queue(2, 2), config, now=0.0).take == (0, 1)  # 4 is a preferred size
    assert select_batch(_queue(*[1] * 8), config, now=0.0).take == tuple(range(8))


def test_the_tail_beyond_the_largest_preferred_size_it_fills_goes_back() -> None:
    config = BatchConfig(max_batch_size=8, preferred_batch_sizes=(4,))
    assert select_batch(_queue(*[1] * 6), config, 0.0).take == (0, 1, 2, 3)
    # 3 + 3 cannot be cut at 4 rows: the batch stays whole
    assert select_batch(_queue(3, 3), config, 0.0).take == (0, 1)


def test_closing_flushes_without_waiting_for_the_delay() -> None:
    config = BatchConfig(max_batch_size=8, max_queue_delay_ms=1000)
    assert select_batch(_queue(1), config, now=0.0).take == ()
    assert select_batch(_queue(1), config, now=0.0, flush=True).take == (0,)


def test_a_long_run_of_other_shapes_is_not_scanned() -> None:
    config = BatchConfig(max_batch_size=8)
    queue = [Req(1), *_queue(*[1] * (MAX_SKIPPED + 1), key=B), Req(1)]
    assert select_batch(queue, config, 0.0).take == (0,)
    near = [Req(1), *_queue(*[1] * MAX_SKIPPED, key=B), Req(1)]
    assert select_batch(near, config, 0.0).take == (0, MAX_SKIPPED + 1)
