"""Sampled request/response logging (``--log-samples RATE``) to a JSONL file, for later evaluation.

A sampled request is handed to a writer thread through a bounded queue: the event loop never
encodes or writes (a full queue drops the sample and counts it). The file rotates at
``max_bytes``: ``F.jsonl`` becomes ``F.jsonl.1`` (the previous ``.1`` is removed), so the disk
holds at most twice ``max_bytes``. One line per sample::

    {"time": "...", "model": "m", "version": "1", "id": null,
     "inputs": {"x": {"datatype": "FP32", "shape": [1, 4], "data": [...]}}, "outputs": {...}}
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import queue
import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter

from duh.errors import ConfigError
from duh.serve._codec import datatype_of

__all__ = ["SampleConfig", "SampleLog"]

log = logging.getLogger(__name__)

_STOP = object()


@dataclass(frozen=True, slots=True)
class SampleConfig:
    """Which requests are logged with their answers, and where."""

    rate: float = field(
        default=0.0, metadata={"help": "share of answered requests logged (0: none, 1: all)"}
    )
    path: Path = field(
        default=Path("duh-samples.jsonl"), metadata={"help": "the JSONL file samples go to"}
    )
    max_bytes: int = field(
        default=64 << 20, metadata={"help": "the file rotates to FILE.1 when it would pass this"}
    )
    queue_size: int = field(
        default=1024, metadata={"help": "samples waiting for the writer at most (then dropped)"}
    )

    def __post_init__(self) -> None:
        if not (0.0 <= self.rate <= 1.0) or math.isnan(self.rate):
            raise ConfigError(f"--log-samples {self.rate}: give a share from 0 to 1, e.g. 0.01")
        if self.max_bytes < 1024:
            raise ConfigError(
                f"--log-samples-max-mb gives {self.max_bytes} bytes; give at least 1 KiB"
            )


def _tensor(array: np.ndarray) -> dict[str, Any]:
    if array.dtype.kind in "OSU":
        data: list[Any] = [
            v.decode("utf-8", "backslashreplace") if isinstance(v, bytes) else str(v)
            for v in array.ravel()
        ]
    elif array.dtype.kind == "f":
        # JSON has no NaN or infinity: they go as null.
        flat = array.ravel().astype(np.float64)
        data = [v if math.isfinite(v) else None for v in flat.tolist()]
    else:
        data = array.ravel().tolist()
    return {"datatype": datatype_of(array.dtype), "shape": list(array.shape), "data": data}


class SampleLog:
    """Writes a random share of answered requests, off the event loop."""

    def __init__(self, config: SampleConfig, registry: CollectorRegistry) -> None:
        self.config = config
        self.logged = Counter("duh_samples_logged", "Requests written to the --log-samples file",
                              registry=registry)
        self.dropped = Counter(
            "duh_samples_dropped",
            "Sampled requests dropped: the writer fell behind (its queue was full) or failed",
            registry=registry)
        self._queue: queue.Queue[Any] = queue.Queue(config.queue_size)
        self._random = random.Random()
        self._thread: threading.Thread | None = None
        if config.rate > 0:
            config.path.parent.mkdir(parents=True, exist_ok=True)
            self._thread = threading.Thread(target=self._write, name="duh-samples", daemon=True)
            self._thread.start()

    def offer(
        self,
        model: str,
        version: str,
        request_id: str | None,
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray],
    ) -> None:
        """Log this request and its answer with probability ``rate`` (never blocks)."""
        if self._thread is None or self._random.random() >= self.config.rate:
            return
        stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
        try:
            self._queue.put_nowait((stamp, model, version, request_id, inputs, outputs))
        except queue.Full:
            self.dropped.inc()

    def _line(self, item: tuple[Any, ...]) -> bytes:
        stamp, model, version, request_id, inputs, outputs = item
        doc = {
            "time": stamp, "model": model, "version": version, "id": request_id,
            "inputs": {k: _tensor(v) for k, v in inputs.items()},
            "outputs": {k: _tensor(v) for k, v in outputs.items()},
        }
        return (json.dumps(doc, separators=(",", ":")) + "\n").encode()

    def _write(self) -> None:
        path = self.config.path
        fh = path.open("ab")
        size = fh.tell()
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    return
                try:
                    line = self._line(item)
                    if size and size + len(line) > self.config.max_bytes:
                        fh.close()
                        os.replace(path, path.with_name(path.name + ".1"))
                        fh = path.open("ab")
                        size = 0
                    fh.write(line)
                    fh.flush()
                    size += len(line)
                    self.logged.inc()
                except OSError as exc:  # a full disk must not stop serving: count and go on
                    self.dropped.inc()
                    log.warning("--log-samples: could not write %s (%s)", path, exc)
        finally:
            fh.close()

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is queued and stop the writer."""
        if self._thread is None:
            return
        try:
            self._queue.put(_STOP, timeout=timeout_s)
        except queue.Full:
            log.warning("--log-samples: the writer did not catch up; queued samples are lost")
            return
        self._thread.join(timeout_s)
        self._thread = None
