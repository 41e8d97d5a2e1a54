"""Failover between engine instances: a watchdog over engine calls, and what replacing one means.

Instances are threads of one process, each with its own engine session. An engine call that
raises fails its requests (500 with the engine's reason) and its instance loads a fresh session
before it takes more work; the other instances keep draining the queue meanwhile. An engine call
that runs past the watchdog's limit fails its requests (500) at once, and a new thread with a
fresh session takes its instance's place. The hung native call cannot be stopped from Python: its
thread is abandoned (it holds its core and the old session's memory until the call returns, and
then exits), which is why the limit should sit well above the slowest honest call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Failover", "Watchdog", "abandon", "abandoned_instances"]

log = logging.getLogger(__name__)

_ABANDONED: list[threading.Thread] = []  # threads left inside a hung engine call


def abandon(thread: threading.Thread) -> None:
    """Record a thread left inside a hung engine call."""
    _ABANDONED.append(thread)


def abandoned_instances() -> int:
    """Threads still inside a hung engine call. While there are any, the process cannot run its
    engines' teardown at exit (the call still uses them): end it with ``os._exit``."""
    return sum(t.is_alive() for t in _ABANDONED)


@dataclass(frozen=True, slots=True)
class Failover:
    """How a batcher replaces a failed instance."""

    watchdog_s: float
    # Loads a fresh engine session for instance ``i`` (blocking; called on a worker thread).
    # ``hung`` says whether the old session is still inside a call (then it is not closed).
    replace: Callable[[int, bool], None]
    # Records a replacement: reason is "error" or "hang".
    replaced: Callable[[str], None]


# Called by the watchdog (on its thread) for an overdue call: (instance, generation, batch).
HangFn = Callable[[int, int, Sequence[Any]], None]


class Watchdog:
    """Watches the engine calls of one batcher; hands one past ``limit_s`` to ``on_hang``.

    Its thread sleeps until the earliest running call's deadline (or until a call starts when
    none runs); it never polls.
    """

    def __init__(self, name: str, limit_s: float, on_hang: HangFn) -> None:
        self.limit_s = limit_s
        self._on_hang = on_hang
        self._cond = threading.Condition(threading.Lock())
        self._busy: dict[int, tuple[float, int, Sequence[Any]]] = {}
        self._closed = False
        self._thread = threading.Thread(target=self._watch, name=f"duh-{name}-watchdog",
                                        daemon=True)
        self._thread.start()

    def started(self, instance: int, generation: int, batch: Sequence[Any]) -> None:
        """Instance ``instance`` (in its ``generation``) calls the engine for ``batch``."""
        with self._cond:
            idle = not self._busy
            self._busy[instance] = (time.monotonic() + self.limit_s, generation, batch)
            if idle:  # later calls' deadlines come after the one the watchdog waits for
                self._cond.notify()

    def finished(self, instance: int, generation: int) -> bool:
        """The call returned; False when it had been declared hung (its results are void)."""
        with self._cond:
            record = self._busy.get(instance)
            if record is None or record[1] != generation:
                return False
            del self._busy[instance]
            return True

    def close(self) -> None:
        """Stop watching."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _watch(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                now = time.monotonic()
                overdue = [(i, r) for i, r in self._busy.items() if r[0] <= now]
                for instance, _ in overdue:
                    del self._busy[instance]
                if not overdue:
                    wait = min(r[0] for r in self._busy.values()) - now if self._busy else None
                    self._cond.wait(wait)
                    continue
            for instance, (_, generation, batch) in overdue:
                self._on_hang(instance, generation, batch)
