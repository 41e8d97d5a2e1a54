"""Apache TVM on the CPU (compiled with LLVM for this host's instruction sets)."""

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

__all__ = ["TvmTarget"]


@register_target
class TvmTarget:
    """TVM Relax: import ONNX, compile for ``llvm -mcpu=<host>``."""

    name = "tvm"
    pip_extra = "tvm"
    devices = ("cpu",)
    precisions = ("fp32", "int8")
    max_ir_version = 10
    max_opset = 26
    short_name_candidate = False

    def unavailable_reason(self, device: str, precision: str, host: HostInfo) -> str | None:
        """Why TVM cannot build (device, precision) here, or None."""
        if package_version("apache-tvm") is None:
            return "package apache-tvm missing: pip install 'duh[tvm]'"
        return "the tvm plugin's compiler is not implemented yet"

    def default_passes(self, spec: TargetSpec) -> list[PassSpec]:
        """simplify and cleanup."""
        return [PassSpec("simplify"), PassSpec("cleanup")]

    def compile(self, model: onnx.ModelProto, ctx: CompileContext, out_dir: Path) -> CompileResult:
        """Not implemented yet."""
        raise TargetError("the tvm target is not implemented yet")

    def load(self, artifact: Path, manifest: Manifest, options: EngineOptions) -> Any:
        """Not implemented yet."""
        raise TargetError("the tvm target is not implemented yet")
