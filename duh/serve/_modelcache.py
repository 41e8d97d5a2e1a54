"""Memory accounting for the model cache: who is resident, how much each takes, who goes first.

A model (every loaded version of one name) is resident or not. Its size is measured when it
loads: the growth of the process's resident set (RSS, ``/proc/self/statm``) around the load and
warm-up, with freed heap handed back to the system first (``malloc_trim``) so that memory a
previous model left behind is not counted twice; it is never taken below the size of the
model's files on disk (RSS can understate a load that reuses pages already mapped). Loads are
serialized, so two loads never share one measurement. The first load on an engine also brings
the engine's library into the process: that model is loaded a second time and measured then.
Before a model's first load its size on disk is the estimate.

``Residency`` is plain bookkeeping (no locks, no I/O): the repository calls it on the event loop.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from duh.errors import ConfigError

__all__ = [
    "MemoryConfig",
    "Residency",
    "disk_bytes",
    "parse_size",
    "process_rss",
    "release_free_memory",
]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


@dataclass(frozen=True, slots=True)
class MemoryConfig:
    """How many models stay resident: a byte budget, what loads at start, what never unloads."""

    budget_bytes: int | None = field(
        default=None,
        metadata={"help": "resident memory all models may take together (e.g. 8G); beyond it the "
                  "least recently used idle model unloads; models then load on first request"},
    )
    preload: bool = field(
        default=False, metadata={"help": "with a budget: load models at start (as many as fit)"}
    )
    pin: tuple[str, ...] = field(
        default=(), metadata={"help": "models loaded at start and never unloaded for memory"}
    )

    def __post_init__(self) -> None:
        if self.budget_bytes is None and (self.preload or self.pin):
            raise ConfigError("--preload and --pin apply to --memory-budget; give a budget too")

    @property
    def lazy(self) -> bool:
        """Whether models load on first request (a budget is set)."""
        return self.budget_bytes is not None


def parse_size(text: str, option: str = "--memory-budget") -> int:
    """``8G``, ``512M``, ``64MiB``, ``1024`` -> bytes (binary units: 1K = 1024)."""
    match = _SIZE.match(text)
    if not match or float(match[1]) <= 0:
        raise ConfigError(f"{option} {text!r} is not a size such as 8G, 512M or 65536")
    return int(float(match[1]) * _UNITS[match[2].lower()])


def process_rss() -> int | None:
    """This process's resident set size in bytes (None where /proc is not available)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


_LIBC = _libc()


def release_free_memory() -> None:
    """Hand freed heap back to the system (glibc ``malloc_trim``), so RSS shows an unload."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def disk_bytes(path: Path) -> int:
    """Bytes of an artifact's files (a directory) or of one model file."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class _Entry:
    __slots__ = ("bytes", "inflight", "last_used")

    def __init__(self, size: int) -> None:
        self.bytes = size
        self.inflight = 0
        self.last_used = time.monotonic()


class Residency:
    """Resident models, their measured bytes, requests in flight and last use."""

    def __init__(self, config: MemoryConfig) -> None:
        self.config = config
        self.pinned = frozenset(config.pin)
        self._entries: dict[str, _Entry] = {}
        self._measured: dict[str, int] = {}  # last measurement, kept after an unload

    @property
    def total(self) -> int:
        """Bytes of every resident model."""
        return sum(e.bytes for e in self._entries.values())

    def bytes_of(self, name: str) -> int:
        """The measured size of a resident model (0 when not resident)."""
        entry = self._entries.get(name)
        return entry.bytes if entry is not None else 0

    def estimate(self, name: str, paths: Iterable[Path]) -> int:
        """What loading ``name`` will take: its last measurement, else its size on disk."""
        known = self._measured.get(name)
        return known if known is not None else sum(disk_bytes(p) for p in paths)

    def loaded(self, name: str, size: int) -> None:
        """``name`` is resident and takes ``size`` bytes."""
        self._measured[name] = size
        entry = self._entries.get(name)
        if entry is None:
            self._entries[name] = _Entry(size)
        else:
            entry.bytes = size

    def unloaded(self, name: str) -> None:
        """``name`` is no longer resident."""
        self._entries.pop(name, None)

    def acquire(self, name: str) -> None:
        """A request for ``name`` is in flight."""
        entry = self._entries.get(name)
        if entry is not None:
            entry.inflight += 1
            entry.last_used = time.monotonic()

    def release(self, name: str) -> None:
        """A request for ``name`` is answered."""
        entry = self._entries.get(name)
        if entry is not None:
            entry.inflight = max(0, entry.inflight - 1)
            entry.last_used = time.monotonic()

    def inflight(self, name: str) -> int:
        """Requests for ``name`` accepted and not yet answered."""
        entry = self._entries.get(name)
        return entry.inflight if entry is not None else 0

    def victims(self, need: int, keep: str) -> list[str] | None:
        """Models to unload so ``need`` more bytes fit the budget, least recently used first.

        Idle models go before busy ones (a busy one is unloaded only after its requests finish);
        pinned models and ``keep`` never go. None when even all of them would not make room.
        """
        budget = self.config.budget_bytes
        if budget is None:
            return []
        free = budget - self.total
        if need <= free:
            return []
        candidates = sorted(
            (e.inflight > 0, e.last_used, name)
            for name, e in self._entries.items()
            if name not in self.pinned and name != keep
        )
        chosen = []
        for _, _, name in candidates:
            chosen.append(name)
            free += self._entries[name].bytes
            if need <= free:
                return chosen
        return None
