"""An ONNX Runtime session behind the runtime's engine contract, on the CPU or a GPU provider."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from duh._ort_errors import ort_errors, ort_reason
from duh.errors import TargetError
from duh.runtime.contract import EngineOptions, OpTiming
from duh.targets._util import import_engine

if TYPE_CHECKING:
    import onnxruntime

__all__ = ["OnnxRuntimeEngine", "ort_module", "session_options"]


def ort_module() -> Any:
    """The onnxruntime module, quiet (its errors reach the user as exceptions)."""
    ort = import_engine("onnxruntime", "onnxruntime", "core", "the onnxruntime engine")
    # Failures reach the user as exceptions; ORT's own error log would print them twice.
    ort.set_default_logger_severity(4)
    return ort


def session_options(options: EngineOptions) -> onnxruntime.SessionOptions:
    """ORT session options for ``options``: threads, profiling, and pass-through settings."""
    ort = ort_module()
    so = ort.SessionOptions()
    so.log_severity_level = 4  # failures surface as exceptions with the same text
    if options.threads:
        so.intra_op_num_threads = options.threads
        so.inter_op_num_threads = 1
    if options.profile:
        so.enable_profiling = True
    # ORT's pool threads spin between runs by default: the lowest single-stream latency, and the
    # plain session a user compares against. Servers and interleaved measurements turn it off
    # (spin=False) so that idle threads leave the cores to the event loop and the other subjects.
    spin = {} if options.spin is None else {
        "session.intra_op.allow_spinning": "1" if options.spin else "0",
        "session.inter_op.allow_spinning": "1" if options.spin else "0",
    }
    extra = {**spin, **options.extra}
    for key, value in extra.items():
        so.add_session_config_entry(key, value)
    return so


class OnnxRuntimeEngine:
    """An ORT CPU session behind the runtime's engine contract; also loads plain .onnx files."""

    engine_name = "onnxruntime"

    def __init__(
        self,
        model: Path,
        options: EngineOptions,
        providers: Sequence[Any] = ("CPUExecutionProvider",),
        where: str = "",
    ) -> None:
        ort = ort_module()
        so = session_options(options)
        # The artifact is already optimized offline; a plain .onnx gets ORT's defaults.
        try:
            self._session = ort.InferenceSession(str(model), so, providers=list(providers))
        except ort_errors() as exc:
            first = ort_reason(exc)
            raise TargetError(f"onnxruntime cannot load {model.name}{where}: {first}") from None
        self._outputs = [o.name for o in self._session.get_outputs()]
        self._profiled = options.profile
        self._profile_lock = threading.Lock()
        self._profile: list[OpTiming] | None = None

    @property
    def session(self) -> onnxruntime.InferenceSession:
        """The underlying ORT session."""
        return self._session

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One inference; values ORT rejects (e.g. an index or a shape input) are a TargetError."""
        try:
            values = self._session.run(self._outputs, dict(feed))
        except ort_errors() as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            shapes = ", ".join(f"{n}{list(np.shape(v))}" for n, v in feed.items())
            raise TargetError(
                f"onnxruntime failed to run the model on {shapes}: {first}; check that the input "
                "values fit the model (indices, sizes and shapes it reads from its inputs)"
            ) from None
        return dict(zip(self._outputs, values, strict=True))

    def op_profile(self) -> list[OpTiming]:
        """Per-node times from ORT's profiler, summed over every run so far."""
        if not self._profiled:
            raise TargetError("profiling was not enabled; load with EngineOptions(profile=True)")
        with self._profile_lock:
            if self._profile is None:
                path = Path(self._session.end_profiling())
                self._profile = _parse_ort_profile(path)
                path.unlink(missing_ok=True)
        return self._profile

    def close(self) -> None:
        """Drop the session."""
        self._session = None  # type: ignore[assignment]


def _parse_ort_profile(path: Path) -> list[OpTiming]:
    events = json.loads(path.read_text(encoding="utf-8"))
    totals: dict[str, list[Any]] = {}
    for event in events:
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        name = str(event["name"])[: -len("_kernel_time")]
        op_type = str(event.get("args", {}).get("op_name", "?"))
        entry = totals.setdefault(name, [op_type, 0.0, 0])
        entry[1] += float(event.get("dur", 0))
        entry[2] += 1
    timings = [OpTiming(name, op, us, calls) for name, (op, us, calls) in totals.items()]
    return sorted(timings, key=lambda t: t.total_us, reverse=True)
