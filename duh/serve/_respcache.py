"""The response cache: answers kept per model, keyed by the exact request, LRU within a byte budget.

Opt-in per model (``--cache NAME:SIZE``). The key is a sha256 over the model name, the version,
the artifact's identity (the sha256 of its manifest, which lists the sha256 of every file; of the
file itself for a plain ``.onnx``), every input's name, datatype, shape and bytes, and the outputs
the request asks for. A new version, or a rebuilt artifact under the same version, never sees
another's answers. Only answers the engine gave are stored, as read-only copies.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from duh.errors import ConfigError
from duh.serve._codec import InferRequest
from duh.serve._metrics import PolicyMetrics
from duh.serve._modelcache import parse_size

__all__ = ["CacheKey", "ResponseCache", "parse_cache", "request_key"]

_ENTRY_OVERHEAD = 256  # bytes an entry costs beyond its arrays (dict slots, key, headers)
_LEN = struct.Struct("<Q")


@dataclass(frozen=True, slots=True)
class CacheKey:
    """Which model version (and artifact) an answer belongs to, and the request's digest."""

    model: str
    version: str
    digest: bytes


def parse_cache(text: str) -> tuple[str, int]:
    """``digits:64M`` -> ("digits", 67108864)."""
    name, sep, size = text.rpartition(":")
    if not sep or not name:
        raise ConfigError(f"--cache {text!r} is not NAME:SIZE (e.g. digits:64M)")
    return name, parse_size(size, "--cache")


def _update(digest: hashlib._Hash, data: bytes | memoryview) -> None:
    digest.update(_LEN.pack(len(data)))
    digest.update(data)


def request_key(
    model: str, version: str, artifact_id: str, request: InferRequest
) -> CacheKey:
    """The cache key of ``request`` for one model version."""
    digest = hashlib.sha256()
    for text in (model, version, artifact_id):
        _update(digest, text.encode())
    for name in sorted(request.inputs):
        array = request.inputs[name]
        _update(digest, name.encode())
        _update(digest, (request.datatypes.get(name) or array.dtype.str).encode())
        _update(digest, repr(tuple(array.shape)).encode())
        if array.dtype == object:
            for value in array.ravel():
                raw = value if isinstance(value, bytes) else str(value).encode()
                _update(digest, raw)
        else:
            _update(digest, np.ascontiguousarray(array).view(np.uint8).data)
    wanted = [o.name for o in request.outputs] if request.outputs is not None else ["*"]
    _update(digest, "\0".join(wanted).encode())
    return CacheKey(model, version, digest.digest())


def _nbytes(outputs: Mapping[str, np.ndarray]) -> int:
    total = _ENTRY_OVERHEAD
    for name, array in outputs.items():
        total += len(name) + array.nbytes
        if array.dtype == object:
            total += sum(len(v) if isinstance(v, bytes | str) else 8 for v in array.ravel())
    return total


class ResponseCache:
    """One model's cached answers (every version's, each under its own keys)."""

    def __init__(self, model: str, capacity_bytes: int, metrics: PolicyMetrics) -> None:
        self.model = model
        self.capacity = capacity_bytes
        self._entries: OrderedDict[CacheKey, tuple[dict[str, np.ndarray], int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # the loop and gRPC handlers may share it
        self._metrics = metrics
        self._size = metrics.cache_bytes.labels(model)
        self._count = metrics.cache_entries.labels(model)
        self._evicted = metrics.cache_evictions.labels(model)

    @property
    def nbytes(self) -> int:
        """Bytes held now."""
        return self._bytes

    def get(self, key: CacheKey) -> dict[str, np.ndarray] | None:
        """The stored answer for ``key`` (then the most recently used), or None."""
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
        if found is None:
            self._metrics.cache_misses.labels(key.model, key.version).inc()
            return None
        self._metrics.cache_hits.labels(key.model, key.version).inc()
        return found[0]

    def put(self, key: CacheKey, outputs: Mapping[str, np.ndarray]) -> None:
        """Store an answer (read-only copies); the least recently used go to make room."""
        size = _nbytes(outputs)
        if size > self.capacity:
            return
        stored = {}
        for name, array in outputs.items():
            copy = np.array(array, copy=True)
            copy.setflags(write=False)
            stored[name] = copy
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            while self._entries and self._bytes + size > self.capacity:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped
                self._evicted.inc()
            self._entries[key] = (stored, size)
            self._bytes += size
            self._size.set(self._bytes)
            self._count.set(len(self._entries))
