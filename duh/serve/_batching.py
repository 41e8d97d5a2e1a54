"""The batching policy, as plain data in and out: which queued requests form the next batch.

``select_batch`` sees the queue (each request's rows, shape key and arrival time), the model
version's ``BatchConfig`` and the time, and answers "take these" or "wait this long". It never
sleeps, locks or reads a clock, so every rule is tested deterministically; ``Batcher`` owns the
threads and the lock around it.

The rules: with no queue delay (the default) a batch is taken as soon as a request is queued —
while one batch computes, the next gathers by itself. With a delay, the oldest request may wait
up to ``max_queue_delay_ms`` for its batch to reach the largest preferred size (or
``max_batch_size``), or any preferred size. A batch is the oldest request and every later one
with the same non-batch shapes, in arrival order, up to ``max_batch_size`` rows; a request that
would overflow it opens the next batch, and no later one passes it. When preferred sizes are
set, the tail beyond the largest preferred size the batch fills exactly goes back to the queue.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["BatchConfig", "Queued", "Selection", "select_batch"]

# Requests of other shapes the selection looks past for the head's batch, at most: a long
# queue of other shapes is not scanned on every batch.
MAX_SKIPPED = 64


@dataclass(frozen=True, slots=True)
class BatchConfig:
    """How one model version batches and queues requests."""

    max_batch_size: int = field(
        default=32, metadata={"help": "rows per engine call (0: no batching)"}
    )
    max_queue_delay_ms: float = field(
        default=0.0, metadata={"help": "how long the oldest request may wait for a fuller batch"}
    )
    preferred_batch_sizes: tuple[int, ...] = field(
        default=(), metadata={"help": "batch sizes to aim for while the queue delay allows"}
    )
    max_queue_size: int = field(
        default=256,
        metadata={"help": "queued requests per model version; beyond it: 503 at once"},
    )
    instances: int = field(
        default=1, metadata={"help": "engine instances (worker threads) per model version"}
    )


class Queued(Protocol):
    """What the policy reads of a queued request."""

    @property
    def rows(self) -> int:
        """Rows (the batch dimension) the request carries."""
        ...

    @property
    def key(self) -> Hashable:
        """The request's non-batch shapes: only equal keys share a batch."""
        ...

    @property
    def enqueued(self) -> float:
        """When it was queued, on the clock ``now`` is read from (seconds)."""
        ...


@dataclass(frozen=True, slots=True)
class Selection:
    """The policy's answer: queue positions to take now, in order, or how long to wait.

    ``take`` empty means wait: ``wait_s`` seconds (then ask again), or, when ``wait_s`` is None,
    until another request arrives.
    """

    take: tuple[int, ...] = ()
    wait_s: float | None = None


def select_batch(
    queue: Sequence[Queued], config: BatchConfig, now: float, *, flush: bool = False
) -> Selection:
    """The next batch from ``queue`` (oldest first) at time ``now``; ``flush`` (the batcher is
    closing) takes what is there without waiting for a fuller batch."""
    if not queue:
        return Selection()
    limit = config.max_batch_size
    delay_s = config.max_queue_delay_ms / 1000.0
    preferred = sorted(set(config.preferred_batch_sizes))
    if delay_s > 0 and limit > 0 and not flush:
        head = queue[0]
        rows = sum(q.rows for q in queue if q.key == head.key)
        target = preferred[-1] if preferred else limit
        remaining = head.enqueued + delay_s - now
        if rows < target and rows not in preferred and remaining > 0:
            return Selection(wait_s=remaining)
    return Selection(take=_take(queue, limit, preferred))


def _take(queue: Sequence[Queued], limit: int, preferred: Sequence[int]) -> tuple[int, ...]:
    """Positions of the oldest request and later ones of its key, up to ``limit`` rows."""
    first = queue[0]
    if limit <= 0 or first.rows >= limit:
        return (0,)
    taken, sizes, skipped = [0], [first.rows], 0
    rows = first.rows
    for index, item in enumerate(itertools.islice(queue, 1, None), start=1):
        if rows >= limit:
            break
        if item.key != first.key:
            skipped += 1
            if skipped > MAX_SKIPPED:
                break
            continue
        if rows + item.rows > limit:
            break  # it opens the next batch: a later, smaller one may not pass it
        taken.append(index)
        sizes.append(item.rows)
        rows += item.rows
    if preferred and rows not in preferred:
        fits = [s for s in preferred if s <= rows]
        if fits:  # keep the head of the batch that fills the largest preferred size exactly
            for cut, total in enumerate(itertools.accumulate(sizes)):
                if total == fits[-1]:
                    return tuple(taken[: cut + 1])
    return tuple(taken)
