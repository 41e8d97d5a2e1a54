"""NVIDIA TensorRT (and ONNX Runtime's CUDA providers) for cuda targets."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from duh.errors import TargetError
from duh.host import HostInfo
from duh.targets._base import CompileContext, CompileResult, PassSpec, TargetSpec, register_target
from duh.targets._util import package_version

if TYPE_CHECKING:
    import onnx

    from duh.runtime._engine import EngineOptions
    from duh.runtime._manifest import Manifest

__all__ = ["TensorRtTarget"]


@register_target
class TensorRtTarget:
    """TensorRT engines built from the pipeline's ONNX (explicit Q/DQ for INT8)."""

    name = "tensorrt"
    pip_extra = "gpu"
    devices = ("cuda",)
    precisions = ("fp32", "fp16", "int8")
    max_ir_version = 10
    max_opset = 26
    short_name_candidate = True

    def unavailable_reason(self, device: str, precision: str, host: HostInfo) -> str | None:
        """Why TensorRT cannot build (device, precision) here, or None."""
        if not host.cuda:
            return "no CUDA device on this host"
        if package_version("tensorrt") is None:
            return "package tensorrt missing: pip install 'duh[gpu]'"
        return "the tensorrt plugin's builder is not implemented yet"

    def default_passes(self, spec: TargetSpec) -> list[PassSpec]:
        """simplify and cleanup."""
        return [PassSpec("simplify"), PassSpec("cleanup")]

    def compile(self, model: onnx.ModelProto, ctx: CompileContext, out_dir: Path) -> CompileResult:
        """Not implemented yet."""
        raise TargetError("the tensorrt target is not implemented yet")

    def load(self, artifact: Path, manifest: Manifest, options: EngineOptions) -> Any:
        """Not implemented yet."""
        raise TargetError("the tensorrt target is not implemented yet")
