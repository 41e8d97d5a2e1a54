"""Apache TVM on the CPU: Relax imports the ONNX model, LLVM compiles it for this host.

The artifact holds the compiled shared library (weights inside) and the manifest says how to call
it: entry function, input order, output names. ``-mcpu``/``-mattr`` come from the host, and the
instruction sets the code may use become the artifact's host requirements. ``--tune-trials N``
tunes the kernels with MetaSchedule; records are cached per model, target and TVM version.
Dynamic dimensions are TVM's weak spot: they either compile or fail with a message that says to
fix them with ``--shape``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import platform
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from duh.errors import ArtifactError, ConfigError, TargetError
from duh.host import HostInfo
from duh.runtime.contract import Dim
from duh.targets._base import CompileContext, CompileResult, PassSpec, TargetSpec, register_target
from duh.targets._util import package_version
from duh.targets.tvm._engine import TVM_ERRORS, TvmEngine, first_line, tvm_module
from duh.targets.tvm._host import LlvmTarget, host_llvm_target, physical_cores
from duh.targets.tvm._speed import speed_note

if TYPE_CHECKING:
    import onnx

    from duh.runtime.contract import EngineOptions, Manifest

__all__ = ["TvmTarget", "speed_note"]

log = logging.getLogger(__name__)

LIBRARY_FILE = "model.so"
_COMPILERS = ("g++", "gcc", "clang++", "clang", "c++", "cc")
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
# What TVM's ONNX frontend says of operators it has no converter for (LSTM, GRU, com.microsoft).
_UNSUPPORTED_OPS = "not supported for frontend ONNX"
_UNTUNED_NOTE = (
    "untuned: without tuning TVM's CPU build runs plain loops; --tune-trials N (e.g. 256) "
    "schedules them for this CPU"
)


def _signature(model: onnx.ModelProto) -> tuple[dict[str, tuple[Dim, ...]], list[str], list[str]]:
    """Input shapes (weights excluded, in call order), dynamic ones, and output names."""
    weights = {init.name for init in model.graph.initializer}
    shapes: dict[str, tuple[Dim, ...]] = {}
    for value in model.graph.input:
        if value.name in weights:
            continue
        if value.type.tensor_type.elem_type == 8:  # STRING
            raise TargetError(
                f"input {value.name!r} is a string tensor, which TVM does not compile; build for "
                "onnxruntime instead"
            )
        shapes[value.name] = tuple(
            int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or None)
            for d in value.type.tensor_type.shape.dim
        )
    dynamic = [n for n, dims in shapes.items() if any(not isinstance(d, int) for d in dims)]
    return shapes, dynamic, [o.name for o in model.graph.output]


def _trials(options: dict[str, str] | Any) -> int:
    text = options.get("tune_trials", "0") or "0"
    try:
        trials = int(text)
    except ValueError:
        raise ConfigError(f"--tune-trials {text!r} is not an integer") from None
    if trials < 0:
        raise ConfigError(f"--tune-trials {trials} is negative; give 0 (no tuning) or more")
    return trials


def _prepack(options: dict[str, str] | Any) -> bool:
    text = str(options.get("weight_prepack", "true")).strip().lower()
    if text not in _BOOLEANS:
        raise ConfigError(f"--option weight_prepack={text!r}: give true or false")
    return _BOOLEANS[text]


def _shape_hint(shapes: dict[str, tuple[Dim, ...]], dynamic: list[str]) -> str:
    def example(dims: tuple[Dim, ...]) -> str:
        return "x".join(str(d) if isinstance(d, int) else "1" for d in dims)

    listed = ", ".join(
        f"{n} [{', '.join('?' if d is None else str(d) for d in shapes[n])}]" for n in dynamic
    )
    fixes = " ".join(f"--shape {n}={example(shapes[n])}" for n in dynamic)
    return f"input(s) {listed} have dynamic dimensions, TVM's weak spot: fix them with {fixes}"


def _name_unknown_dims(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose unnamed dynamic input dims each get a name of their own.

    TVM's ONNX frontend gives every unnamed dimension one shared symbol, so an input declared
    ``[?, 3, ?, ?]`` would demand equal batch, height and width.
    """
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    for value in out.graph.input:
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            if not dim.HasField("dim_value") and not dim.dim_param:
                dim.dim_param = f"{value.name}_dim{axis}"
    return out


def _import(model: onnx.ModelProto) -> Any:
    from tvm.relax.frontend.onnx import from_onnx

    model = _name_unknown_dims(model)
    # The frontend prints converter failures itself; they reach the user in the error instead.
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            return from_onnx(model)
    finally:
        if printed.getvalue().strip():
            log.debug("tvm's ONNX frontend: %s", printed.getvalue().strip())


@register_target
class TvmTarget:
    """TVM Relax: import ONNX, compile for this host's ``llvm -mcpu``, optionally tune."""

    name = "tvm"
    pip_extra = "tvm"
    devices = ("cpu",)
    precisions = ("fp32", "int8")
    max_ir_version = 13
    max_opset = 23
    short_name_candidate = False

    def unavailable_reason(self, device: str, precision: str, host: HostInfo) -> str | None:
        """Why TVM cannot build (device, precision) here, or None."""
        if package_version("apache-tvm") is None:
            return "package apache-tvm missing: pip install 'duh[tvm]'"
        if device != "cpu" or precision not in self.precisions:
            return f"tvm does not offer {device}-{precision} in this plugin"
        compiler = os.environ.get("CXX") or os.environ.get("CC")
        if not compiler and not any(shutil.which(c) for c in _COMPILERS):
            return "no C compiler on PATH (TVM links its library with one): install gcc"
        return None

    def default_passes(self, spec: TargetSpec) -> list[PassSpec]:
        """lower-ml, simplify, fold-constants and cleanup; int8 adds Q/DQ quantization (TVM runs
        the QDQ model as it is)."""
        passes = [
            PassSpec("lower-ml"),
            PassSpec("simplify"),
            PassSpec("fold-constants"),
            PassSpec("cleanup"),
        ]
        if spec.precision == "int8":
            passes.append(PassSpec("quantize", {"mode": "static"}))
        return passes

    def compile(self, model: onnx.ModelProto, ctx: CompileContext, out_dir: Path) -> CompileResult:
        """Import, (tune,) compile and export the shared library."""
        tvm = tvm_module()
        from duh.targets.tvm import _tune

        trials = _trials(ctx.options)
        prepack = _prepack(ctx.options)
        shapes, dynamic, outputs = _signature(model)
        llvm: LlvmTarget = host_llvm_target(ctx.host)
        target = tvm.target.Target(llvm.to_json())
        hint = f"; {_shape_hint(shapes, dynamic)}" if dynamic else ""
        if trials and dynamic:
            raise TargetError(f"tuning needs fixed input shapes{hint}")
        try:
            mod = _import(model)
        except TVM_ERRORS as exc:
            text = first_line(exc)
            if _UNSUPPORTED_OPS in text:
                # fixed shapes add no converter: say where the model does run instead
                hint = "; build for onnxruntime or openvino instead (-t cpu)"
            raise TargetError(f"tvm cannot import the model: {text}{hint}") from None
        notes = [f"llvm target: {llvm.text()}"]
        tuning = None
        if trials:
            digest = hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()
            prepared = _tune.prepare(mod, target, prepack)
            tuning = _tune.tune(
                prepared, target, llvm, digest, trials, ctx.cache_dir / "tuning", prepack
            )
            mod = _tune.apply_records(prepared, target, tuning.records, prepack)
            notes.append(
                f"reused cached tuning records ({tuning.trials} trials)"
                if tuning.reused
                else f"tuned {tuning.trials} trials over {tuning.tasks} tasks in "
                f"{tuning.seconds:.0f}s ({tuning.cost_model} cost model"
                + (f"; resumed from {tuning.resumed_from} cached trials)"
                   if tuning.resumed_from else ")")
            )  # fmt: skip
            notes.append(
                "weights prepacked in the layouts the tuned kernels read"
                if prepack
                else "weights kept in ONNX layout (--option weight_prepack=false)"
            )
        else:
            notes.append(_UNTUNED_NOTE)
        try:
            executable = tvm.compile(mod, target=target)
            executable.export_library(str(out_dir / LIBRARY_FILE))
        except TVM_ERRORS as exc:
            raise TargetError(f"tvm cannot compile the model: {first_line(exc)}{hint}") from None
        return CompileResult(
            engine_version=tvm.__version__,
            engine_config={
                "library": LIBRARY_FILE,
                "entry": "main",
                "inputs": list(shapes),
                "outputs": outputs,
                "target": llvm.to_json(),
                "tuning": None if tuning is None else tuning.to_json(),
            },
            host_requirements={
                "cpu_flags": list(llvm.required_flags),
                "machine": platform.machine(),
                "llvm_mcpu": llvm.mcpu,
            },
            notes=tuple(notes),
        )

    def load(self, artifact: Path, manifest: Manifest, options: EngineOptions) -> TvmEngine:
        """Load the library into Relax virtual machines."""
        config = manifest.engine_config
        machine = manifest.host_requirements.get("machine")
        if machine and machine != platform.machine():
            raise ArtifactError(
                f"this TVM artifact was compiled for {machine}, this host is "
                f"{platform.machine()}; rebuild it here (duh build --target tvm:cpu)"
            )
        return TvmEngine(
            artifact / str(config.get("library", LIBRARY_FILE)),
            [str(n) for n in config.get("inputs", [i.name for i in manifest.inputs])],
            [str(n) for n in config.get("outputs", [o.name for o in manifest.outputs])],
            options,
            default_threads=physical_cores(),
            entry=str(config.get("entry", "main")),
        )
