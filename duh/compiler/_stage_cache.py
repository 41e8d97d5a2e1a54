"""The content-addressed build cache: each stage's output (a model after a pass prefix, a whole
artifact) stored under the sha256 of everything that made it.

An entry is a directory ``<root>/<key[:2]>/<key>/`` holding ``entry.json`` (what it is, when it
was made, the sha256 of every file) and ``files/``. Entries are written into a temp directory and
renamed in, so a reader sees a whole entry or none; a per-key ``fcntl`` lock keeps a reader and
``prune`` (or two writers) apart. A reader re-hashes every file: an entry that does not match
what it recorded is removed and reported as a miss, never used.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duh._cache import cache_dir, parse_size
from duh.runtime import sha256_file

__all__ = ["CacheEntry", "CacheEvent", "PruneResult", "StageCache", "max_size"]

log = logging.getLogger(__name__)

_ENTRY = "entry.json"
_FORMAT = 1


@dataclass(frozen=True, slots=True)
class CacheEvent:
    """One lookup of a build: the stage, its key, and whether the cache had it (and why not)."""

    stage: str
    key: str
    hit: bool
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        """The form stored in the manifest's ``build.cache`` section."""
        return {"stage": self.stage, "key": self.key, "hit": self.hit, "note": self.note}


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """A stored entry: its key, kind, name, payload, size, and when it was made and last used."""

    key: str
    kind: str
    name: str
    path: Path
    payload: Mapping[str, Any]
    files: Mapping[str, str]
    size: int
    created: float
    used: float

    @property
    def files_dir(self) -> Path:
        """The directory holding the entry's files."""
        return self.path / "files"

    def to_json(self) -> dict[str, Any]:
        """The form ``duh cache ls --json`` prints."""
        return {
            "key": self.key,
            "kind": self.kind,
            "name": self.name,
            "size": self.size,
            "files": len(self.files),
            "created": self.created,
            "used": self.used,
        }


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What ``prune`` removed and what is left."""

    removed: tuple[CacheEntry, ...]
    kept: int
    freed: int
    size_left: int


def _hash_tree(root: Path) -> dict[str, str]:
    """sha256 of every file below ``root`` (the manifest too), by POSIX path."""
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _intact(entry: CacheEntry) -> bool:
    try:
        return _hash_tree(entry.files_dir) == dict(entry.files)
    except OSError:
        return False


_MAX_SIZE_ENV = "DUH_CACHE_MAX_SIZE"
_DEFAULT_MAX_SIZE = 20 << 30
_PRUNE_EVERY_S = 300.0


def max_size() -> int:
    """The build cache's size limit in bytes: ``$DUH_CACHE_MAX_SIZE`` (20G unless set; 0: none)."""
    text = os.environ.get(_MAX_SIZE_ENV)
    return _DEFAULT_MAX_SIZE if not text else parse_size(text, _MAX_SIZE_ENV)


@dataclass(slots=True)
class StageCache:
    """The build cache under ``root``; ``enabled=False`` looks nothing up and stores nothing.

    ``events`` collects every lookup of the build that owns this object (for its manifest).
    """

    root: Path
    enabled: bool = True
    events: list[CacheEvent] = field(default_factory=list)

    @classmethod
    def default(cls, enabled: bool = True) -> StageCache:
        """The cache under ``$DUH_CACHE_DIR/builds`` (or ``~/.cache/duh/builds``)."""
        return cls(cache_dir("builds"), enabled)

    def _dir(self, key: str) -> Path:
        return self.root / key[:2] / key

    @contextlib.contextmanager
    def _lock(self, key: str, shared: bool = False, wait: bool = True) -> Iterator[bool]:
        """Hold the lock of ``key``; yields False when ``wait`` is off and someone holds it."""
        locks = self.root / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"{key}.lock", "a+b") as fh:
            flags = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB)
            try:
                fcntl.flock(fh, flags)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _read(self, path: Path) -> CacheEntry | None:
        """The entry at ``path`` as it says it is (not verified), None when unreadable."""
        try:
            meta = json.loads((path / _ENTRY).read_text(encoding="utf-8"))
            files = {str(k): str(v) for k, v in meta["files"].items()}
            stat = (path / _ENTRY).stat()
            size = sum(p.stat().st_size for p in (path / "files").rglob("*") if p.is_file())
            return CacheEntry(
                path.name, str(meta["kind"]), str(meta["name"]), path, dict(meta["payload"]),
                files, size, float(meta["created"]), stat.st_mtime,
            )  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _drop(self, key: str) -> None:
        with self._lock(key):
            path = self._dir(key)
            if path.exists():
                trash = Path(tempfile.mkdtemp(prefix=".drop-", dir=self.root))
                os.replace(path, trash / "x")
                shutil.rmtree(trash, ignore_errors=True)

    @contextlib.contextmanager
    def lookup(self, key: str, stage: str) -> Iterator[CacheEntry | None]:
        """Yield the verified entry of ``key`` (held against ``prune`` while in use), or None.

        An entry whose files no longer match the sha256 it recorded is removed and reported as a
        miss with the reason: it is rebuilt, never used.
        """
        if not self.enabled:
            yield None
            return
        note, entry = "", None
        with self._lock(key, shared=True):
            path = self._dir(key)
            if path.is_dir():
                entry = self._read(path)
                if entry is None:
                    note = "unreadable entry: rebuilt"
                elif not _intact(entry):
                    note, entry = "files do not match their sha256: rebuilt", None
                else:
                    os.utime(path / _ENTRY)  # last use, for prune --older-than
            if entry is not None:
                self.events.append(CacheEvent(stage, key, True))
                yield entry
                return
        if note:
            log.warning("build cache entry %s (%s): %s", key, stage, note)
            self._drop(key)
        self.events.append(CacheEvent(stage, key, False, note))
        yield None

    def store(
        self, key: str, kind: str, name: str, source: Path, payload: Mapping[str, Any]
    ) -> None:
        """Store the files under directory ``source`` (copied) as the entry ``key``.

        Written in a temp directory and renamed in; when another build stored ``key`` first,
        its entry is kept (the same inputs made both).
        """
        if not self.enabled:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".new-", dir=self.root))
        try:
            shutil.copytree(source, tmp / "files")
            meta = {
                "format": _FORMAT,
                "kind": kind,
                "name": name,
                "created": time.time(),
                "payload": dict(payload),
                "files": _hash_tree(tmp / "files"),
            }
            (tmp / _ENTRY).write_text(json.dumps(meta, indent=1), encoding="utf-8")
            final = self._dir(key)
            final.parent.mkdir(parents=True, exist_ok=True)
            with self._lock(key):
                if final.exists():
                    return
                os.replace(tmp, final)
        except OSError as exc:
            # A full disk or a read-only cache costs the reuse, not the build.
            log.warning("could not store build cache entry %s: %s", key, exc)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self._keep_within_limit()

    def _keep_within_limit(self) -> None:
        """Prune the least recently used entries past ``$DUH_CACHE_MAX_SIZE`` (20G unless set;
        0 keeps everything), at most once every five minutes: a session of builds filled 60 GB."""
        limit = max_size()
        stamp = self.root / "last-prune"
        try:
            if not limit or time.time() - stamp.stat().st_mtime < _PRUNE_EVERY_S:
                return
        except FileNotFoundError:
            pass
        stamp.touch()
        result = self.prune(max_size=limit)
        if result.removed:
            log.info(
                "build cache past its %d-byte limit: %d least recently used entries removed "
                "(%d bytes)", limit, len(result.removed), result.freed,
            )  # fmt: skip

    def entries(self) -> list[CacheEntry]:
        """Every entry, oldest use first."""
        if not self.root.is_dir():
            return []
        found = [
            entry
            for shard in self.root.iterdir()
            if shard.is_dir() and len(shard.name) == 2
            for path in shard.iterdir()
            if (entry := self._read(path)) is not None
        ]
        return sorted(found, key=lambda e: e.used)

    def prune(self, older_than_s: float | None = None, max_size: int | None = None) -> PruneResult:
        """Remove entries unused for ``older_than_s``, then the least recently used until the
        cache holds at most ``max_size`` bytes. An entry in use by a build is skipped."""
        entries = self.entries()
        now, total = time.time(), sum(e.size for e in entries)
        removed = []
        for entry in entries:
            old = older_than_s is not None and now - entry.used > older_than_s
            big = max_size is not None and total > max_size
            if not (old or big):
                continue
            with self._lock(entry.key, wait=False) as free:
                if not free:
                    continue
                shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry)
            total -= entry.size
        # An alias (an input key) whose artifact is gone leads nowhere: it goes too.
        for entry in entries:
            target = entry.payload.get("artifact")
            if entry in removed or not isinstance(target, str) or self._dir(target).exists():
                continue
            with self._lock(entry.key, wait=False) as free:
                if free:
                    shutil.rmtree(entry.path, ignore_errors=True)
                    removed.append(entry)
        freed = sum(e.size for e in removed)
        return PruneResult(tuple(removed), len(entries) - len(removed), freed, total)
