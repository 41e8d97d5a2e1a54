"""A batch job: its plan (shards, what is already done), and its record on disk.

The output folder holds one ``shard-NNNNN.npz`` per shard (the outputs of rows
``N*shard_size`` onwards, in input order) and ``batch.json``, the job's record: which artifact,
which input, the shard size, and each finished shard's sample count and sha256. Running the same
command again skips every shard whose file is there and runs the rest; a different job pointed at
the same folder is refused.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import duh
from duh.batch._shards import ShardDone, ShardJob, shard_name
from duh.batch._sources import Source, open_source
from duh.errors import ConfigError, DuhError
from duh.host import host_info
from duh.runtime import (
    MANIFEST_NAME,
    TensorSpec,
    check_host,
    read_manifest,
    sha256_file,
    verify_files,
)

__all__ = [
    "RECORD_NAME",
    "BatchPlan",
    "BatchRequest",
    "BatchResult",
    "Ledger",
    "cores",
    "failure",
    "plan_batch",
    "read_outputs",
]

RECORD_NAME = "batch.json"
_FORMAT = 1


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class BatchRequest:
    """One offline inference job."""

    artifact: Path
    input: Path
    output: Path
    batch_size: int = field(
        default=64,
        metadata={
            "help": "rows per engine call (a model with a fixed batch dimension uses its own); "
            "compare sizes with `duh bench ART --batch 8,32,128`"
        },
    )
    shard_size: int = field(
        default=1024, metadata={"help": "rows per output file (the unit of resume)"}
    )
    workers: int | None = field(
        default=None,
        metadata={
            "help": "engines at once (default 1: in this process, on every core; N > 1: N "
            "worker processes, seconds to start; Ray: one actor per CPU)"
        },
    )
    threads: int | None = field(
        default=None, metadata={"help": "engine threads per worker (default: cores / workers)"}
    )
    engine_options: Mapping[str, str] = field(default_factory=dict)
    preprocess: str | None = field(
        default=None, metadata={"help": "image preprocessing: a TOML file or key=value text"}
    )

    def __post_init__(self) -> None:
        for name in ("batch_size", "shard_size", "workers", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """The shards of a job and which of them are still to run."""

    request: BatchRequest
    source: Source
    outputs: tuple[TensorSpec, ...]
    fingerprint: Mapping[str, Any]
    shards: tuple[tuple[int, int], ...]  # (start, stop) per shard index
    pending: tuple[int, ...]
    done: Mapping[int, Mapping[str, Any]]  # index -> {"count", "sha256"}

    @property
    def total(self) -> int:
        """Samples in the whole job."""
        return self.source.count

    @property
    def skipped_samples(self) -> int:
        """Samples whose shards were finished before this run."""
        return sum(int(d["count"]) for d in self.done.values())

    def job(self, index: int) -> ShardJob:
        """The work of shard ``index``."""
        start, stop = self.shards[index]
        request = self.request
        return ShardJob(index, start, stop, self.source, request.output, request.batch_size)


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What a run did: counts, time and throughput (of the samples this run inferred)."""

    output: Path
    samples: int
    shards: int
    shards_run: int
    shards_skipped: int
    samples_run: int
    seconds: float
    workers: int
    runner: str

    @property
    def samples_per_s(self) -> float:
        """Throughput of this run."""
        return self.samples_run / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """Plain values for ``--json``."""
        return {
            "output": str(self.output), "samples": self.samples, "shards": self.shards,
            "shards_run": self.shards_run, "shards_skipped": self.shards_skipped,
            "samples_run": self.samples_run, "seconds": round(self.seconds, 4),
            "samples_per_s": round(self.samples_per_s, 2), "workers": self.workers,
            "runner": self.runner,
        }


def _signature(artifact: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...], str]:
    if artifact.is_file() and artifact.suffix == ".onnx":
        with duh.load(artifact) as session:
            return session.inputs, session.outputs, sha256_file(artifact)
    manifest = read_manifest(artifact)
    # Checked here once, so that a tampered artifact or a wrong host is one error, not a pool of
    # workers failing to start.
    verify_files(artifact, manifest)
    check_host(manifest, host_info())
    return manifest.inputs, manifest.outputs, sha256_file(artifact / MANIFEST_NAME)


def _read_record(output: Path) -> dict[str, Any] | None:
    path = output / RECORD_NAME
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict):
            raise ValueError("not an object")
        return record
    except (ValueError, OSError) as exc:
        raise ConfigError(
            f"{path} is unreadable ({exc}); delete the output folder to start the job anew"
        ) from None


def _check_shard(path: Path, count: int) -> dict[str, Any]:
    """The record of a shard file found without one (the job was killed before recording it)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            counts = {len(data[k]) for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"{path} is unreadable ({exc}); delete it and run again") from None
    if counts != {count}:
        raise ConfigError(f"{path} holds {sorted(counts)} rows, expected {count}; delete it")
    return {"count": count, "sha256": sha256_file(path)}


def plan_batch(request: BatchRequest) -> BatchPlan:
    """Read the artifact's signature and the input, and find the shards still to run.

    Raises ``ConfigError`` when the output folder holds other files or another job's results.
    """
    inputs, outputs, artifact_digest = _signature(request.artifact)
    source = open_source(request.input, inputs, request.preprocess)
    if source.count == 0:
        raise ConfigError(f"input {request.input} holds no samples")
    fingerprint = {
        "artifact": artifact_digest,
        "input": str(request.input.resolve()),
        "source": source.describe(),
        "preprocess": request.preprocess,
        "shard_size": request.shard_size,
    }
    shards = tuple(
        (lo, min(lo + request.shard_size, source.count))
        for lo in range(0, source.count, request.shard_size)
    )
    output = request.output
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {output} is a file; give a folder (new, or a job's own)")
    record = _read_record(output) if output.is_dir() else None
    if record is None and output.is_dir() and any(output.iterdir()):
        raise ConfigError(f"output folder {output} is not empty and holds no {RECORD_NAME}")
    if record is not None and record.get("job") != fingerprint:
        raise ConfigError(
            f"output folder {output} holds the results of another job (artifact, input or "
            "shard size differ); pick another --output or delete it"
        )
    recorded = dict(record.get("shards", {})) if record else {}
    done: dict[int, Mapping[str, Any]] = {}
    for index, (lo, hi) in enumerate(shards):
        path = output / shard_name(index)
        if path.is_file():
            done[index] = recorded.get(str(index)) or _check_shard(path, hi - lo)
    pending = tuple(i for i in range(len(shards)) if i not in done)
    return BatchPlan(request, source, outputs, fingerprint, shards, pending, done)


class Ledger:
    """The job's record on disk, rewritten atomically after each finished shard."""

    def __init__(self, plan: BatchPlan) -> None:
        self.plan = plan
        self.shards: dict[str, Mapping[str, Any]] = {str(i): d for i, d in plan.done.items()}
        output = plan.request.output
        output.mkdir(parents=True, exist_ok=True)
        # Temporary files of shards a killed run was writing: never renamed, so never results.
        # The same for a record a killed run was rewriting.
        for stale in (*output.glob(".shard-*.tmp"), *output.glob(f".{RECORD_NAME}.*.tmp")):
            stale.unlink(missing_ok=True)
        self._write()

    def record(self, done: ShardDone) -> None:
        """Note a finished shard."""
        self.shards[str(done.index)] = {"count": done.count, "sha256": done.sha256}
        self._write()

    def _write(self) -> None:
        plan = self.plan
        document = {
            "format": _FORMAT,
            "job": dict(plan.fingerprint),
            "samples": plan.total,
            "outputs": [s.to_json() for s in plan.outputs],
            "shard_count": len(plan.shards),
            "complete": len(self.shards) == len(plan.shards),
            "shards": dict(sorted(self.shards.items(), key=lambda kv: int(kv[0]))),
        }
        output = plan.request.output
        fd, tmp = tempfile.mkstemp(dir=output, prefix=f".{RECORD_NAME}.", suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(document, handle, indent=1)
        os.replace(tmp, output / RECORD_NAME)


def failure(done: ShardDone) -> DuhError:
    """The user error a worker reported, raised again here with its exit code."""
    error = DuhError(f"shard {done.index}: {done.error}")
    error.exit_code = done.exit_code
    return error


def read_outputs(output: str | Path) -> dict[str, np.ndarray]:
    """Every output of a finished job, its shards concatenated in input order."""
    output = Path(output)
    record = _read_record(output)
    if record is None or not record.get("complete"):
        raise ConfigError(f"{output} holds no finished batch job; run `duh batch` to finish it")
    parts: dict[str, list[np.ndarray]] = {}
    for index in range(int(record["shard_count"])):
        with np.load(output / shard_name(index), allow_pickle=False) as data:
            for name in data.files:
                parts.setdefault(name, []).append(data[name])
    return {name: np.concatenate(p) for name, p in parts.items()}
