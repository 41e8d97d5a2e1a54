"""One served model version: its engine instances, request checks, batcher and descriptions."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import duh
from duh.errors import ConfigError, InputError
from duh.runtime import MANIFEST_NAME, Session, TensorSpec, check_feed, sha256_file
from duh.serve._batcher import BatchConfig, Batcher, Pending
from duh.serve._codec import DATATYPES, InferRequest, datatype_of
from duh.serve._errors import RequestError, UnavailableError
from duh.serve._instances import Failover
from duh.serve._metrics import Metrics, VersionMetrics

__all__ = [
    "LoadOptions",
    "ModelSource",
    "ModelVersion",
    "VersionPolicy",
    "artifact_id",
    "load_version",
]

log = logging.getLogger(__name__)

# numpy dtype name -> Triton model-config data type
_CONFIG_TYPES = {dt.name: f"TYPE_{name}" for name, dt in DATATYPES.items()}
_CONFIG_TYPES["object"] = "TYPE_STRING"
_PLATFORMS = {
    "onnxruntime": "onnxruntime_onnx", "openvino": "openvino", "tensorrt": "tensorrt_plan"
}


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Where one model version comes from: an artifact directory (or a plain .onnx)."""

    name: str
    version: str
    path: Path


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """How every model version is loaded and batched."""

    batch: BatchConfig = field(default_factory=BatchConfig)
    threads: int | None = field(
        default=None, metadata={"help": "engine threads per instance; default: cores / instances"}
    )
    engine_options: Mapping[str, str] = field(
        default_factory=dict, metadata={"help": "engine settings passed through to duh.load"}
    )
    public_key: Path | None = field(
        default=None,
        metadata={"help": "Ed25519 public key: load only artifacts whose signature it verifies"},
    )
    response_cache: Mapping[str, int] = field(
        default_factory=dict, metadata={"help": "model name -> response cache size in bytes"}
    )
    watchdog_s: float | None = field(
        default=None,
        metadata={"help": "an engine call running longer fails its requests (500) and its "
                  "instance is replaced; an engine call that raises replaces its instance too"},
    )

    def __post_init__(self) -> None:
        if self.watchdog_s is not None and not self.watchdog_s > 0:
            raise ConfigError(f"--watchdog-s {self.watchdog_s:g}: give a number of seconds > 0")


@dataclass(frozen=True, slots=True)
class VersionPolicy:
    """What a loaded version needs beyond its sessions: identity, caching, failover."""

    artifact_id: str = ""  # what the response cache keys on (see ``artifact_id``)
    cached: bool = False  # whether its model has a response cache
    watchdog_s: float | None = None  # failover on: the watchdog's limit
    opener: Callable[[], Session] | None = None  # loads a fresh session (failover)


def _spec_datatype(spec: TensorSpec) -> str:
    return "BYTES" if spec.dtype == "object" else datatype_of(spec.dtype)


def _batchable(specs: Sequence[TensorSpec]) -> bool:
    """A model batches when every input and output has a leading dimension of free size."""
    return all(s.shape and not isinstance(s.shape[0], int) for s in specs)


class ModelVersion:
    """A loaded model version behind a batcher; ``infer`` is called on the event loop."""

    def __init__(
        self,
        source: ModelSource,
        sessions: Sequence[Session],
        batch: BatchConfig,
        loop: asyncio.AbstractEventLoop,
        metrics: VersionMetrics,
        policy: VersionPolicy | None = None,
    ) -> None:
        policy = policy or VersionPolicy()
        self.name = source.name
        self.artifact_id = policy.artifact_id
        self.cached = policy.cached
        self._opener = policy.opener
        self.version = source.version
        self.path = source.path
        self.sessions = list(sessions)
        first = self.sessions[0]
        self.inputs: tuple[TensorSpec, ...] = first.inputs
        self.outputs: tuple[TensorSpec, ...] = first.outputs
        self.engine = first.engine_name
        self.batchable = _batchable([*self.inputs, *self.outputs])
        self.max_batch_size = batch.max_batch_size if self.batchable else 0
        self.batch_config = batch
        self.metrics = metrics
        self._input_types = {s.name: _spec_datatype(s) for s in self.inputs}
        self._output_names = [s.name for s in self.outputs]
        self._loop = loop
        failover = None
        if policy.watchdog_s is not None and policy.opener is not None:
            failover = Failover(policy.watchdog_s, self._replace, metrics.restarted)
        self.batcher = Batcher(
            f"{self.name}:{self.version}",
            self._run,
            BatchConfig(
                max_batch_size=self.max_batch_size,
                max_queue_delay_ms=batch.max_queue_delay_ms,
                preferred_batch_sizes=batch.preferred_batch_sizes,
                max_queue_size=batch.max_queue_size,
                instances=len(self.sessions),
            ),
            loop,
            metrics.batch,
            failover,
        )
        metrics.queue_depth.set_function(lambda: self.batcher.depth)
        metrics.instances(len(self.sessions))

    def _replace(self, instance: int, hung: bool) -> None:
        """A fresh session for ``instance`` (failover; blocking, on that instance's thread).

        A hung session is left to its abandoned thread (closing it under a running call is not
        safe); a failed one is closed once replaced.
        """
        assert self._opener is not None
        self.metrics.instances(len(self.sessions) - 1)
        try:
            fresh = self._opener()
        finally:
            self.metrics.instances(len(self.sessions))
        old, self.sessions[instance] = self.sessions[instance], fresh
        if not hung:
            old.close()

    def _run(self, instance: int, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.sessions[instance].run(feed)

    def check(self, request: InferRequest) -> tuple[dict[str, np.ndarray], int, Hashable]:
        """Check a request against the signature: its feed, its rows and its batching key."""
        for spec in self.inputs:
            datatype = request.datatypes.get(spec.name)
            if datatype is not None and datatype != self._input_types[spec.name]:
                raise RequestError(
                    f"model {self.name}: input {spec.name!r} has datatype {datatype}, "
                    f"expected {self._input_types[spec.name]}"
                )
        try:
            feed = check_feed(self.inputs, request.inputs)
        except InputError as exc:
            raise RequestError(f"model {self.name}: {exc}") from None
        rows = 0
        for spec in self.inputs:
            array = feed[spec.name]
            if self.batchable:
                if rows and array.shape[0] != rows:
                    raise RequestError(
                        f"model {self.name}: inputs have {rows} and {array.shape[0]} rows; "
                        "every input of a request needs the same batch size"
                    )
                rows = array.shape[0]
        if self.batchable and rows < 1:
            raise RequestError(f"model {self.name}: a request needs at least one row")
        if request.outputs is not None:
            for out in request.outputs:
                if out.name not in self._output_names:
                    raise RequestError(
                        f"model {self.name}: unknown output {out.name!r}; its outputs are "
                        + ", ".join(self._output_names)
                    )
        key = tuple(a.shape[1:] for a in feed.values()) if self.batchable else None
        return feed, max(rows, 1), key

    async def infer(self, request: InferRequest) -> dict[str, np.ndarray]:
        """Queue a checked request, await its rows, and keep the outputs it asks for."""
        feed, rows, key = self.check(request)
        future: asyncio.Future[dict[str, np.ndarray]] = self._loop.create_future()
        deadline = timer = None
        if request.timeout_us:
            wait_s = request.timeout_us / 1e6
            deadline = time.perf_counter() + wait_s
            timer = self._loop.call_later(wait_s, _expire, future, self.name, request.timeout_us)
        pending = Pending(feed, rows, key, future, deadline)
        self.batcher.submit(pending)
        try:
            result = await future
        except asyncio.CancelledError:
            self.batcher.withdraw(pending)  # the caller hung up: free its place in the queue
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if request.outputs is None:
            return result
        return {o.name: result[o.name] for o in request.outputs}

    def close(self, timeout_s: float | None = None) -> bool:
        """Finish the queued requests, stop the workers and release the engines."""
        drained = self.batcher.close(timeout_s)
        if drained:
            for session in self.sessions:
                session.close()
        return drained

    # -- descriptions ------------------------------------------------------------------------

    def _shape_text(self, spec: TensorSpec) -> str:
        return "[" + ", ".join(str(d) if isinstance(d, int) else "-1" for d in spec.shape) + "]"

    def _dims(self, spec: TensorSpec, drop_batch: bool) -> list[int]:
        dims = [d if isinstance(d, int) else -1 for d in spec.shape]
        return dims[1:] if drop_batch else dims

    @property
    def instance_kind(self) -> str:
        """Triton's instance kind: ``KIND_GPU`` for an artifact built for a CUDA target (its
        manifest's target device), else ``KIND_CPU`` (also for a plain .onnx, run on the CPU)."""
        manifest = self.sessions[0].manifest
        device = manifest.target.get("device") if manifest is not None else None
        return "KIND_GPU" if device == "cuda" else "KIND_CPU"

    @property
    def platform(self) -> str:
        """The platform name the protocol reports (``onnxruntime_onnx``, ...)."""
        return _PLATFORMS.get(self.engine, self.engine)

    def metadata_json(self, versions: Sequence[str]) -> dict[str, Any]:
        """The model metadata response."""
        def tensor(spec: TensorSpec, datatype: str) -> dict[str, Any]:
            return {"name": spec.name, "datatype": datatype, "shape": self._dims(spec, False)}

        return {
            "name": self.name,
            "versions": list(versions),
            "platform": self.platform,
            "inputs": [tensor(s, self._input_types[s.name]) for s in self.inputs],
            "outputs": [tensor(s, _spec_datatype(s)) for s in self.outputs],
        }

    def config_json(self) -> dict[str, Any]:
        """The model configuration as Triton reports it (what perf_analyzer reads)."""
        def tensor(spec: TensorSpec) -> dict[str, Any]:
            return {
                "name": spec.name,
                "data_type": _CONFIG_TYPES.get(spec.dtype, "TYPE_INVALID"),
                "dims": self._dims(spec, self.batchable),
            }

        batch = self.batch_config
        config: dict[str, Any] = {
            "name": self.name,
            "platform": self.platform,
            "backend": self.engine,
            "version_policy": {"latest": {"num_versions": 1}},
            "max_batch_size": self.max_batch_size,
            "input": [tensor(s) for s in self.inputs],
            "output": [tensor(s) for s in self.outputs],
            "instance_group": [
                {"name": self.name, "kind": self.instance_kind, "count": len(self.sessions)}
            ],
        }
        config["response_cache"] = {"enable": self.cached}
        if self.batchable:
            config["dynamic_batching"] = {
                "preferred_batch_size": list(batch.preferred_batch_sizes),
                "max_queue_delay_microseconds": int(batch.max_queue_delay_ms * 1000),
                "default_queue_policy": {"max_queue_size": batch.max_queue_size},
            }
        return config


def _expire(future: asyncio.Future[Any], name: str, timeout_us: int) -> None:
    if not future.done():
        future.set_exception(UnavailableError(
            f"model {name}: no result within the request's timeout of {timeout_us} us; "
            "raise the timeout or send fewer requests",
            "timeout",
            retry_after_s=None,
        ))


def _warm_up(session: Session) -> None:
    """One batch-1 call on zeros, so the first request does not pay the engine's first run."""
    if any(s.dtype == "object" for s in session.inputs):
        return
    feed = {
        s.name: np.zeros([d if isinstance(d, int) else 1 for d in s.shape], dtype=s.dtype)
        for s in session.inputs
    }
    try:
        session.run(feed)
    except Exception as exc:  # noqa: BLE001 - zeros may not suit every model; serving goes on
        log.warning("warm-up of %s on zeros failed (%s); serving it anyway", session.path, exc)


def load_version(
    source: ModelSource,
    options: LoadOptions,
    loop: asyncio.AbstractEventLoop,
    metrics: Metrics,
) -> ModelVersion:
    """Load ``options.batch.instances`` sessions of one version (blocking: call off the loop)."""
    instances = max(1, options.batch.instances)
    threads = options.threads or max(1, (os.cpu_count() or 1) // instances)
    extra = dict(options.engine_options)

    def open_session() -> Session:
        # Idle pool threads must not spin on the cores the event loop and batcher need.
        session = duh.load(source.path, threads=threads, engine_options=extra, spin=False,
                           public_key=options.public_key)
        _warm_up(session)
        return session

    sessions = [open_session() for _ in range(instances)]
    log.info("loaded %s version %s from %s (%d instance(s), %s)", source.name, source.version,
             source.path, instances, sessions[0].engine_name)
    policy = VersionPolicy(artifact_id(source.path), source.name in options.response_cache,
                           options.watchdog_s, open_session)
    return ModelVersion(source, sessions, options.batch, loop,
                        metrics.version(source.name, source.version), policy)


def artifact_id(path: Path) -> str:
    """What identifies an artifact's content: the sha256 of its manifest (which holds every
    file's sha256, checked at load), or of the file itself for a plain ``.onnx``."""
    if path.is_dir():
        return hashlib.sha256((path / MANIFEST_NAME).read_bytes()).hexdigest()
    return sha256_file(path)
