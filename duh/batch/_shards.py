"""One shard of a batch job: read its rows, run them in batches, write its outputs atomically.

A ``ShardRunner`` holds one loaded session (one engine per worker process or Ray actor). Its
output ``shard-NNNNN.npz`` appears only complete: it is written to a temporary file in the output
folder and renamed, so a killed job leaves finished shards and nothing half-written.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import duh
from duh.batch._sources import Source
from duh.errors import DuhError, InputError
from duh.runtime import Session

__all__ = ["ShardDone", "ShardJob", "ShardRunner", "WorkerSpec", "shard_name", "write_shard"]


def shard_name(index: int) -> str:
    """The file name of shard ``index``."""
    return f"shard-{index:05d}.npz"


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """How each worker loads its engine."""

    artifact: Path
    threads: int | None = None
    engine_options: Mapping[str, str] = field(default_factory=dict)
    # Off where threads reading and writing shards share the cores with the engine's threads:
    # spinning pool threads would take the cores those need between runs.
    spin: bool | None = None


@dataclass(frozen=True, slots=True)
class ShardJob:
    """Rows ``start:stop`` of ``source`` go to ``output/shard-INDEX.npz`` in batches."""

    index: int
    start: int
    stop: int
    source: Source
    output: Path
    batch_size: int


@dataclass(frozen=True, slots=True)
class ShardDone:
    """A finished shard (or, with ``error``, one that failed with a user error)."""

    index: int
    count: int
    sha256: str = ""
    seconds: float = 0.0
    error: str = ""
    exit_code: int = 0


def _batch_axis(session: Session, asked: int) -> tuple[int, bool]:
    """The batch to run and whether the model fixes it (then a short last batch is padded)."""
    firsts = {s.shape[0] for s in session.inputs if s.shape}
    fixed = [d for d in firsts if isinstance(d, int)]
    if fixed:
        return int(fixed[0]), True
    return asked, False


def _run_batches(
    session: Session, arrays: Mapping[str, np.ndarray], count: int, batch_size: int
) -> dict[str, np.ndarray]:
    size, fixed = _batch_axis(session, batch_size)
    parts: dict[str, list[np.ndarray]] = {}
    for lo in range(0, count, size):
        hi = min(lo + size, count)
        feed = {n: a[lo:hi] for n, a in arrays.items()}
        if fixed and hi - lo < size:
            # The model takes exactly `size` rows: repeat the last row, keep only the real ones.
            pad = size - (hi - lo)
            feed = {n: np.concatenate([a, np.repeat(a[-1:], pad, 0)]) for n, a in feed.items()}
        result = session.run(feed)
        for name, value in result.items():
            if value.ndim == 0 or value.shape[0] != (size if fixed else hi - lo):
                raise InputError(
                    f"output {name!r} has shape {list(value.shape)} for a batch of {hi - lo}: its "
                    "first axis is not the batch axis, so duh batch cannot split it per sample"
                )
            parts.setdefault(name, []).append(value[: hi - lo])
    return {n: np.concatenate(p) for n, p in parts.items()}


def _write_atomic(path: Path, arrays: Mapping[str, np.ndarray]) -> str:
    handle = tempfile.NamedTemporaryFile(
        dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp", delete=False
    )
    try:
        with handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]
            handle.flush()
            os.fsync(handle.fileno())
        digest = hashlib.sha256(Path(handle.name).read_bytes()).hexdigest()
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return digest


def write_shard(job: ShardJob, outputs: Mapping[str, np.ndarray], began: float) -> ShardDone:
    """Write a shard's outputs atomically; ``began`` is when its work started (for its time)."""
    digest = _write_atomic(job.output / shard_name(job.index), outputs)
    return ShardDone(job.index, job.stop - job.start, digest, time.perf_counter() - began)


class ShardRunner:
    """Runs shards with one session, loaded once (``duh.load``)."""

    def __init__(self, worker: WorkerSpec) -> None:
        self.session = duh.load(
            worker.artifact, threads=worker.threads, engine_options=dict(worker.engine_options),
            spin=worker.spin,
        )

    def infer(self, job: ShardJob, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The outputs of a shard's rows (``job.source.read``), run in batches."""
        return _run_batches(self.session, arrays, job.stop - job.start, job.batch_size)

    def __call__(self, job: ShardJob) -> ShardDone:
        """Run one shard; a user error comes back in ``ShardDone.error`` (to cross processes)."""
        began = time.perf_counter()
        try:
            return write_shard(job, self.infer(job, job.source.read(job.start, job.stop)), began)
        except DuhError as exc:
            return ShardDone(job.index, 0, error=str(exc), exit_code=exc.exit_code)

    def close(self) -> None:
        """Release the engine."""
        self.session.close()
