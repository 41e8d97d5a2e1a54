"""ONNX Runtime: the ``onnxruntime`` engine on the CPU; cuda targets go to ``_cuda``."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from duh._ort_errors import ort_errors
from duh.errors import TargetError
from duh.host import HostInfo
from duh.runtime._engine import EngineOptions, OpTiming
from duh.targets._base import CompileContext, CompileResult, PassSpec, TargetSpec, register_target
from duh.targets._util import import_engine, package_version, save_onnx

if TYPE_CHECKING:
    import onnx
    import onnxruntime

    from duh.runtime._manifest import Manifest

__all__ = ["OnnxRuntimeEngine", "OnnxRuntimeTarget", "session_options"]

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"


def _ort() -> Any:
    ort = import_engine("onnxruntime", "onnxruntime", "core", "the onnxruntime engine")
    # Failures reach the user as exceptions; ORT's own error log would print them twice.
    ort.set_default_logger_severity(4)
    return ort


def session_options(options: EngineOptions) -> onnxruntime.SessionOptions:
    """ORT session options for ``options``: threads, profiling, and pass-through settings."""
    ort = _ort()
    so = ort.SessionOptions()
    so.log_severity_level = 4  # failures surface as exceptions with the same text
    if options.threads:
        so.intra_op_num_threads = options.threads
        so.inter_op_num_threads = 1
    if options.profile:
        so.enable_profiling = True
    # ORT's pool threads spin between runs by default and take the cores that servers, clients
    # and other engines measured beside it need; `session.intra_op.allow_spinning=1` restores it.
    extra = {"session.intra_op.allow_spinning": "0", **options.extra}
    for key, value in extra.items():
        so.add_session_config_entry(key, value)
    return so


@register_target
class OnnxRuntimeTarget:
    """ONNX Runtime on the CPU. The artifact holds the graph after ORT's offline optimization."""

    name = "onnxruntime"
    pip_extra = "core"
    devices = ("cpu", "cuda")
    precisions = ("fp32", "fp16", "int8")
    max_ir_version = 13
    max_opset = 26
    short_name_candidate = True

    def unavailable_reason(self, device: str, precision: str, host: HostInfo) -> str | None:
        """Why ORT cannot build (device, precision) here, or None."""
        if package_version("onnxruntime") is None and package_version("onnxruntime-gpu") is None:
            return "package onnxruntime missing: pip install duh"
        if device == "cuda" and precision in self.precisions:
            from duh.targets.onnxruntime import _cuda

            return _cuda.unavailable_reason(precision, host)
        if device != "cpu" or precision not in self.precisions:
            return f"onnxruntime does not offer {device}-{precision} in this plugin"
        return None

    def default_passes(self, spec: TargetSpec) -> list[PassSpec]:
        """simplify, fold-constants, fuse and cleanup; then quantize (int8) or fp16."""
        if spec.device == "cuda":
            from duh.targets.onnxruntime import _cuda

            return _cuda.default_passes(spec)
        passes = [
            PassSpec("simplify"), PassSpec("fold-constants"), PassSpec("fuse"), PassSpec("cleanup")
        ]
        if spec.precision == "int8":
            passes.append(PassSpec("quantize"))
        elif spec.precision == "fp16":
            passes.append(PassSpec("fp16"))
        return passes

    def compile(self, model: onnx.ModelProto, ctx: CompileContext, out_dir: Path) -> CompileResult:
        """Run ORT's extended graph optimizations offline and save the optimized graph."""
        if ctx.spec.device == "cuda":
            from duh.targets.onnxruntime import _cuda

            return _cuda.compile_cuda(model, ctx, out_dir)
        ort = _ort()
        staged = out_dir.parent / (out_dir.name + ".in.onnx")
        written = save_onnx(model, staged)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        # EXTENDED, not ALL: ALL adds layout transforms tied to this CPU's vector width.
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(out_dir / MODEL_FILE)
        if len(written) > 1:
            so.add_session_config_entry(
                "session.optimized_model_external_initializers_file_name", MODEL_FILE + ".data"
            )
        try:
            ort.InferenceSession(str(staged), so, providers=["CPUExecutionProvider"])
        except ort_errors() as exc:
            raise TargetError(f"onnxruntime cannot load the optimized model: {exc}") from None
        finally:
            for path in written:
                path.unlink(missing_ok=True)
        notes: tuple[str, ...] = ()
        if ctx.spec.precision == "fp16":
            notes = ("onnxruntime's CPU provider lacks float16 kernels for most ops; it runs them "
                     "in float32 between Casts, so expect no speed-up, only smaller weights",)
        return CompileResult(
            engine_version=ort.__version__,
            engine_config={"model": MODEL_FILE, "graph_optimization_level": "extended"},
            notes=notes,
        )

    def load(self, artifact: Path, manifest: Manifest, options: EngineOptions) -> OnnxRuntimeEngine:
        """Open the artifact's optimized model in an ORT session."""
        if manifest.engine_config.get("device") == "cuda":
            from duh.targets.onnxruntime import _cuda

            return _cuda.load_cuda(artifact, manifest, options)  # type: ignore[return-value]
        model = artifact / str(manifest.engine_config.get("model", MODEL_FILE))
        return OnnxRuntimeEngine(model, options)


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
        ort = _ort()
        so = session_options(options)
        # The artifact is already optimized offline; a plain .onnx gets ORT's defaults.
        try:
            self._session = ort.InferenceSession(str(model), so, providers=list(providers))
        except ort_errors() as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
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
        """One inference; ORT rejecting the values (e.g. an index or shape input) is a TargetError."""
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
