"""ONNX Runtime: the ``onnxruntime`` engine on the CPU; cuda targets go to ``_cuda``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from duh._ort_errors import ort_errors
from duh.errors import TargetError
from duh.host import HostInfo, int8_dot_saturates
from duh.targets._base import CompileContext, CompileResult, PassSpec, TargetSpec, register_target
from duh.targets._util import package_version, save_onnx
from duh.targets.onnxruntime import _cuda
from duh.targets.onnxruntime._engine import OnnxRuntimeEngine, ort_module, session_options

if TYPE_CHECKING:
    import onnx

    from duh.runtime.contract import EngineOptions, Manifest

__all__ = [
    "OnnxRuntimeEngine",
    "OnnxRuntimeTarget",
    "exact_int8_copy",
    "exact_int8_weights",
    "session_options",
]

MODEL_FILE = "model.onnx"


def exact_int8_weights(model: onnx.ModelProto, only_wide: bool = False) -> int:
    """Move the int8 weights of ``model``'s integer ops to uint8, in place, so that ONNX
    Runtime multiplies them exactly on every x86 CPU; how many moved (see ``_exact``)."""
    from duh.targets.onnxruntime import _exact

    return _exact.exact_int8_weights(model, only_wide)


def exact_int8_copy(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """``model``, or a copy whose full-range int8 weights are uint8 (what ORT's u8 x s8 kernels
    saturate on without VNNI; 7-bit ones they multiply exactly), and how many moved."""
    import onnx

    from duh.targets.onnxruntime._exact import saturating_weights

    if not saturating_weights(model):
        return model, 0
    exact = onnx.ModelProto()
    exact.CopyFrom(model)
    return exact, exact_int8_weights(exact, only_wide=True)


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
            return _cuda.unavailable_reason(precision, host)
        if device != "cpu" or precision not in self.precisions:
            return f"onnxruntime does not offer {device}-{precision} in this plugin"
        return None

    def default_passes(self, spec: TargetSpec) -> list[PassSpec]:
        """simplify, fold-constants, fuse and cleanup; then quantize (int8) or fp16."""
        if spec.device == "cuda":
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
            return _cuda.compile_cuda(model, ctx, out_dir)
        ort = ort_module()
        notes: tuple[str, ...] = ()
        if int8_dot_saturates(ctx.host.cpu_flags, ctx.host.machine):
            model, moved = exact_int8_copy(model)
            if moved:
                notes = (f"{moved} int8 weight tensors of full 8-bit range held as uint8: this "
                         "CPU lacks VNNI, and ONNX Runtime's u8 x s8 kernels saturate on them",)
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
        if ctx.spec.precision == "fp16":
            notes += ("onnxruntime's CPU provider lacks float16 kernels for most ops; it runs them "
                     "in float32 between Casts, so expect no speed-up, only smaller weights",)
        return CompileResult(
            engine_version=ort.__version__,
            engine_config={"model": MODEL_FILE, "graph_optimization_level": "extended"},
            notes=notes,
        )

    def load(self, artifact: Path, manifest: Manifest, options: EngineOptions) -> OnnxRuntimeEngine:
        """Open the artifact's optimized model in an ORT session."""
        if manifest.engine_config.get("device") == "cuda":
            return _cuda.load_cuda(artifact, manifest, options)
        model = artifact / str(manifest.engine_config.get("model", MODEL_FILE))
        return OnnxRuntimeEngine(model, options)
