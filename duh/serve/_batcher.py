"""Dynamic batching: requests queue per model version; engine threads take them in batches.

Each engine instance owns one worker thread. A worker sleeps on a condition until a request
arrives or the batching policy's wait ends, and takes the batch ``select_batch`` names (the
policy and its rules are in ``_batching``). The engine call runs off the event loop and releases
the GIL; its results go back to the loop in one callback per batch, each request getting exactly
its rows.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence

import numpy as np

from duh.errors import DuhError
from duh.serve._batching import BatchConfig, select_batch
from duh.serve._errors import InternalServeError, ServeError, UnavailableError
from duh.serve._instances import Failover, Watchdog, abandon

__all__ = ["BatchConfig", "Batcher", "Pending"]

log = logging.getLogger(__name__)

# Runs one feed on one engine instance: (instance index, feed) -> outputs.
RunFn = Callable[[int, dict[str, np.ndarray]], dict[str, np.ndarray]]


class Pending:
    """One queued request: its feed, rows, shape key, and the future its caller awaits."""

    __slots__ = ("deadline", "enqueued", "feed", "future", "key", "rows", "started")

    def __init__(
        self,
        feed: dict[str, np.ndarray],
        rows: int,
        key: Hashable,
        future: asyncio.Future[dict[str, np.ndarray]],
        deadline: float | None,
    ) -> None:
        self.feed = feed
        self.rows = rows
        self.key = key
        self.future = future
        self.deadline = deadline
        self.enqueued = time.perf_counter()
        self.started = 0.0


# Called on the worker thread after each batch: (batch size in rows, queue waits, compute s).
BatchHook = Callable[[int, Sequence[float], float], None]


class Batcher:
    """The queue of one model version and the worker threads that drain it."""

    def __init__(
        self,
        name: str,
        run: RunFn,
        config: BatchConfig,
        loop: asyncio.AbstractEventLoop,
        on_batch: BatchHook | None = None,
        failover: Failover | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self._run = run
        self._loop = loop
        self._on_batch = on_batch
        self._queue: deque[Pending] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._closing = False
        self._failover = failover
        count = max(1, config.instances)
        self._generation = [0] * count  # bumped when a hung instance's thread is abandoned
        self._watchdog = (
            Watchdog(name, failover.watchdog_s, self._hung) if failover is not None else None
        )
        self._threads = [self._thread(i, 0, False) for i in range(count)]
        for thread in self._threads:
            thread.start()

    def _thread(self, instance: int, generation: int, revive: bool) -> threading.Thread:
        return threading.Thread(target=self._work, args=(instance, generation, revive),
                                name=f"duh-{self.name}-{instance}", daemon=True)

    @property
    def depth(self) -> int:
        """Requests waiting (not yet taken into a batch)."""
        return len(self._queue)

    def submit(self, pending: Pending) -> None:
        """Queue a request; raises ``UnavailableError`` at once when the queue is full or closed."""
        with self._cond:
            if self._closing:
                raise UnavailableError(f"model {self.name} is unloading; retry", "unloading")
            if len(self._queue) >= self.config.max_queue_size:
                raise UnavailableError(
                    f"model {self.name} has {len(self._queue)} requests queued, its limit "
                    f"(--max-queue-size {self.config.max_queue_size}); retry later",
                    "queue_full",
                )
            self._queue.append(pending)
            self._cond.notify()

    def withdraw(self, pending: Pending) -> None:
        """Take back a request whose caller went away (hung up, cancelled) if it still waits.

        Its queue slot is free at once; one already taken into a batch is skipped there, as
        its future is done.
        """
        with self._cond:
            try:
                self._queue.remove(pending)
            except ValueError:
                pass

    def close(self, timeout_s: float | None = None) -> bool:
        """Stop taking requests, finish those queued, and join the workers; False on timeout."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for thread in list(self._threads):  # abandoned (hung) threads are not waited for
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(remaining)
        if self._watchdog is not None:
            self._watchdog.close()
        return not any(t.is_alive() for t in self._threads)

    # -- worker side ---------------------------------------------------------------------------

    def _next_batch(self) -> list[Pending] | None:
        """Wait (lock held) until a batch is due and take it; None once closed and empty."""
        while True:
            if self._closing and not self._queue:
                return None
            choice = select_batch(
                self._queue, self.config, time.perf_counter(), flush=self._closing
            )
            if choice.take:
                batch = [self._queue[i] for i in choice.take]
                for i in reversed(choice.take):  # indices near the head: cheap deque deletes
                    del self._queue[i]
                return batch
            self._cond.wait(choice.wait_s)

    def _work(self, instance: int, generation: int, revive: bool) -> None:
        if revive:
            self._replace(instance, hung=True)
        while self._generation[instance] == generation:
            with self._cond:
                batch = self._next_batch()
            if batch is None:
                return
            if not self._execute(instance, batch, generation) and self._failover is not None:
                if self._generation[instance] == generation:
                    self._replace(instance, hung=False)

    def _replace(self, instance: int, hung: bool) -> None:
        """Load a fresh session for ``instance`` (on its thread, the others keep serving)."""
        assert self._failover is not None
        reason = "hang" if hung else "error"
        log.warning("model %s: replacing instance %d after an engine %s", self.name, instance,
                    reason)
        try:
            self._failover.replace(instance, hung)
        except Exception:  # the old session serves on; its next failure tries again
            log.exception("model %s: loading a fresh session for instance %d failed", self.name,
                          instance)
        self._failover.replaced(reason)

    def _hung(self, instance: int, generation: int, batch: Sequence[Pending]) -> None:
        """The watchdog's call: fail the hung batch, abandon its thread, start a new one."""
        assert self._failover is not None
        with self._cond:
            if self._generation[instance] != generation or self._closing:
                return
            self._generation[instance] = generation + 1
            thread = self._thread(instance, generation + 1, True)
            abandon(self._threads[instance])
            self._threads[instance] = thread
        error = InternalServeError(
            f"model {self.name}: the engine call ran past the watchdog's "
            f"{self._failover.watchdog_s:g} s (--watchdog-s); its instance is being replaced"
        )
        log.error("model %s: instance %d hung past %.3gs; replacing it", self.name, instance,
                  self._failover.watchdog_s)
        self._loop.call_soon_threadsafe(_fail_all, list(batch), error)
        thread.start()

    def _guarded(self, instance: int, generation: int,
                 batch: list[Pending]) -> list[dict[str, np.ndarray]] | None:
        """``_compute`` under the watchdog; None when it was declared hung meanwhile."""
        if self._watchdog is None:
            return self._compute(instance, batch)
        self._watchdog.started(instance, generation, batch)
        try:
            results = self._compute(instance, batch)
        finally:
            current = self._watchdog.finished(instance, generation)
        return results if current else None

    def _execute(self, instance: int, batch: list[Pending], generation: int = 0) -> bool:
        """Run a batch and answer its requests; False when an engine call raised."""
        now = time.perf_counter()
        live = [p for p in batch if not p.future.done()]  # timed out or abandoned: skip
        expired = [p for p in live if p.deadline is not None and p.deadline <= now]
        if expired:
            live = [p for p in live if p.deadline is None or p.deadline > now]
            self._loop.call_soon_threadsafe(_fail_all, expired, _timeout_error(self.name))
        if not live:
            return True
        for p in live:
            p.started = now
        started = time.perf_counter()
        try:
            results = self._guarded(instance, generation, live)
        except Exception as exc:  # noqa: BLE001 - every engine failure goes to its callers
            if len(live) == 1:
                self._loop.call_soon_threadsafe(_fail_all, live, self._failure(exc))
                return False
            # One bad request must not fail its batch neighbours: each runs again alone, and
            # only those that fail alone get the error.
            log.info("model %s: a batch of %d failed (%s); running each alone", self.name,
                     len(live), exc)
            return all([self._execute_alone(instance, p, now, generation) for p in live])
        if results is None:  # declared hung: its callers were answered, this thread retires
            return True
        compute = time.perf_counter() - started
        self._loop.call_soon_threadsafe(_resolve_all, live, results)
        if self._on_batch is not None:
            self._on_batch(sum(p.rows for p in live), [now - p.enqueued for p in live], compute)
        return True

    def _execute_alone(self, instance: int, pending: Pending, now: float,
                       generation: int) -> bool:
        started = time.perf_counter()
        try:
            result = self._guarded(instance, generation, [pending])
        except Exception as exc:  # noqa: BLE001 - the failure goes to this caller only
            self._loop.call_soon_threadsafe(_fail_all, [pending], self._failure(exc))
            return False
        if result is None:
            return True
        self._loop.call_soon_threadsafe(_resolve_all, [pending], result)
        if self._on_batch is not None:
            self._on_batch(pending.rows, [now - pending.enqueued], time.perf_counter() - started)
        return True

    def _failure(self, exc: Exception) -> ServeError:
        """The error a caller gets for an engine call that raised ``exc`` (500 with the reason)."""
        if isinstance(exc, ServeError):
            return exc
        if isinstance(exc, DuhError):
            return InternalServeError(str(exc))
        log.error("model %s: engine call failed", self.name, exc_info=exc)
        return InternalServeError(f"model {self.name}: the engine failed: {exc}")

    def _compute(self, instance: int, batch: list[Pending]) -> list[dict[str, np.ndarray]]:
        limit = self.config.max_batch_size
        if len(batch) == 1:
            item = batch[0]
            if limit <= 0 or item.rows <= limit:
                return [self._run(instance, item.feed)]
            return [self._split_run(instance, item, limit)]
        feed = {
            name: np.concatenate([p.feed[name] for p in batch]) for name in batch[0].feed
        }
        outputs = self._run(instance, feed)
        results = []
        start = 0
        for p in batch:
            stop = start + p.rows
            results.append({name: value[start:stop] for name, value in outputs.items()})
            start = stop
        return results

    def _split_run(self, instance: int, item: Pending, limit: int) -> dict[str, np.ndarray]:
        """A request larger than the batch limit runs in slices of ``limit`` rows, joined after."""
        parts = []
        for i in range(math.ceil(item.rows / limit)):
            chunk = {n: v[i * limit : (i + 1) * limit] for n, v in item.feed.items()}
            parts.append(self._run(instance, chunk))
        return {n: np.concatenate([p[n] for p in parts]) for n in parts[0]}


def _timeout_error(name: str) -> UnavailableError:
    return UnavailableError(
        f"model {name}: the request's timeout passed while it waited in the queue; "
        "raise its timeout or send fewer requests",
        "timeout",
        retry_after_s=None,
    )


def _resolve_all(batch: Sequence[Pending], results: Sequence[dict[str, np.ndarray]]) -> None:
    for pending, result in zip(batch, results, strict=True):
        if not pending.future.done():
            pending.future.set_result(result)


def _fail_all(batch: Sequence[Pending], error: BaseException) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(error)
