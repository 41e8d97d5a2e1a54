"""NVIDIA TensorRT for cuda targets: a serialized engine built from the pass pipeline's ONNX.

- fp32 / fp16: strongly typed engines (fp16 weights and compute come from the ``fp16`` pass);
- int8: TensorRT 11 has no implicit INT8 calibration, so duh calibrates and inserts symmetric
  Q/DQ (``quantize`` with int8 activations and per-channel weights), checks the Q/DQ placement
  against TensorRT's rules on the ONNX graph, and builds a strongly typed engine from it (the
  same explicit-Q/DQ route on TensorRT 10);
- dynamic inputs get an optimization profile from ``--shape NAME=MIN:OPT:MAX``;
- kernel timings are kept in a timing cache in the build cache, per GPU and TensorRT version.

The manifest records the GPU's compute capability and the TensorRT version; ``duh.load`` refuses
an engine built for another of either unless it was built hardware- or version-compatible.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from duh._cache import cache_key
from duh._cuda import CudaInfo, bindings_mismatch, cuda_bindings_version, cuda_info
from duh.errors import ArtifactError, MissingDependencyError, TargetError
from duh.host import HostInfo
from duh.targets._base import CompileContext, CompileResult, PassSpec, TargetSpec, register_target
from duh.targets._gpu import (
    gpu_default_passes,
    input_profiles,
    prepare_int8,
    profile_ranges,
    settings_from_options,
)
from duh.targets._util import import_engine, save_onnx
from duh.targets.tensorrt._build import build_engine

if TYPE_CHECKING:
    import onnx

    from duh.runtime.contract import EngineOptions, Manifest
    from duh.targets.tensorrt._runtime import TensorRtEngine

__all__ = ["MIN_COMPUTE_CAPABILITY", "TensorRtTarget", "check_engine_compat"]

log = logging.getLogger(__name__)

ENGINE_FILE = "model.engine"
# TensorRT 10 supports Turing (7.5) and newer.
MIN_COMPUTE_CAPABILITY = (7, 5)
# Hardware-compatible (AMPERE_PLUS) engines run from compute capability 8.0 on.
_AMPERE = (8, 0)


def _cc(text: str) -> tuple[int, int]:
    major, _, minor = str(text).partition(".")
    return int(major), int(minor or 0)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in str(text).split(".")[:3] if p.isdigit())


def check_engine_compat(req: Mapping[str, Any], info: CudaInfo, device: int = 0) -> None:
    """Refuse, with the reason, a TensorRT engine this host cannot run.

    An engine runs only on the compute capability and TensorRT version that built it, unless it
    was built hardware-compatible (any GPU from compute capability 8.0 on) or version-compatible
    (later TensorRT releases of the same major version).
    """
    built_cc = str(req.get("cuda_compute_capability", ""))
    built_trt = str(req.get("tensorrt_version", ""))
    gpu = info.device(device)
    if gpu is None:
        raise ArtifactError(
            f"this artifact is a TensorRT engine for compute capability {built_cc or '?'} and this "
            f"host has no CUDA device {device} ({info.reason or 'none found'}); build for a CPU "
            "target instead"
        )
    if info.tensorrt is None:
        raise MissingDependencyError("tensorrt", "gpu", "running TensorRT engines")
    level = str(req.get("hardware_compatibility_level", "none"))
    if built_cc and gpu.compute_capability != built_cc:
        if level != "ampere_plus":
            raise ArtifactError(
                f"this TensorRT engine was built for compute capability {built_cc}, this GPU "
                f"({gpu.name}) has {gpu.compute_capability}; rebuild it on this host, or build it "
                "with --option hardware_compatible=true (compute capability 8.0 and newer)"
            )
        if _cc(gpu.compute_capability) < _AMPERE:
            raise ArtifactError(
                f"this hardware-compatible TensorRT engine needs compute capability 8.0 or newer; "
                f"this GPU ({gpu.name}) has {gpu.compute_capability}: rebuild it on this host"
            )
    if built_trt and _version(info.tensorrt) != _version(built_trt):
        have, want = _version(info.tensorrt), _version(built_trt)
        later_same_major = have[:1] == want[:1] and have > want
        if not (req.get("version_compatible") and later_same_major):
            hint = (
                "version-compatible engines run on later releases of their major version only"
                if req.get("version_compatible")
                else "or build it with --option version_compatible=true"
            )
            raise ArtifactError(
                f"this TensorRT engine was built with TensorRT {built_trt}, this host has "
                f"{info.tensorrt}; rebuild it on this host ({hint})"
            )


def _cuda_python_missing() -> bool:
    # ``cuda`` is a namespace other packages also provide: ask for cuda-python's own module.
    try:
        return importlib.util.find_spec("cuda.bindings") is None
    except ImportError:
        return True


@register_target
class TensorRtTarget:
    """TensorRT engines built from the pipeline's ONNX (explicit Q/DQ for INT8)."""

    name = "tensorrt"
    pip_extra = "gpu"
    devices = ("cuda",)
    precisions = ("fp32", "fp16", "int8")
    max_ir_version = 10
    max_opset = 22
    short_name_candidate = True

    def unavailable_reason(self, device: str, precision: str, host: HostInfo) -> str | None:
        """Why TensorRT cannot build (device, precision) here, or None."""
        if device != "cuda" or precision not in self.precisions:
            return f"tensorrt does not offer {device}-{precision}"
        if not host.cuda:
            return cuda_info().reason or "no CUDA device"
        if cuda_info().tensorrt is None:
            return "package tensorrt missing: pip install 'duh[gpu]'"
        if _cuda_python_missing():
            return "package cuda-python missing (CUDA buffers for engines): pip install 'duh[gpu]'"
        mismatch = bindings_mismatch(cuda_info().cuda_driver_api, cuda_bindings_version())
        if mismatch:
            return mismatch
        gpu = host.cuda[0]
        if _cc(gpu.compute_capability) < MIN_COMPUTE_CAPABILITY:
            return (
                f"{gpu.name} has compute capability {gpu.compute_capability}; TensorRT needs "
                f"{MIN_COMPUTE_CAPABILITY[0]}.{MIN_COMPUTE_CAPABILITY[1]} or newer"
            )
        return None

    def default_passes(self, spec: TargetSpec) -> list[PassSpec]:
        """Clean-up passes; then fp16 conversion (fp16) or symmetric Q/DQ quantization (int8)."""
        return gpu_default_passes(spec)

    def compile(self, model: onnx.ModelProto, ctx: CompileContext, out_dir: Path) -> CompileResult:
        """Build and serialize the engine on this host's GPU."""
        settings = settings_from_options(ctx.options)
        profiles = input_profiles(model, profile_ranges(ctx.options), settings.max_batch)
        notes: list[str] = []
        if ctx.spec.precision == "int8":
            model, int8_notes = prepare_int8(model)
            notes += int8_notes
        info = cuda_info()
        gpu = info.device(settings.device)
        if gpu is None:
            raise TargetError(
                f"tensorrt needs CUDA device {settings.device} and this host has "
                f"{len(info.devices)} ({info.reason or 'see nvidia-smi'})"
            )
        trt = import_engine("tensorrt", "tensorrt", "gpu", "the tensorrt engine")
        from duh.targets.tensorrt._runtime import cuda_check, cuda_runtime

        cudart = cuda_runtime()
        cuda_check(cudart, cudart.cudaSetDevice(settings.device), "selecting the GPU")
        staged = out_dir.parent / (out_dir.name + ".in.onnx")
        written = save_onnx(model, staged)
        key = cache_key(gpu.name, gpu.compute_capability, trt.__version__)
        timing_cache = ctx.cache_dir / "timing" / f"{key}.cache"
        try:
            engine, build_notes = build_engine(
                trt, staged, ctx.spec.precision, profiles, settings, timing_cache
            )
        finally:
            for path in written:
                path.unlink(missing_ok=True)
        (out_dir / ENGINE_FILE).write_bytes(engine)
        level = "ampere_plus" if settings.hardware_compatible else "none"
        return CompileResult(
            engine_version=trt.__version__,
            engine_config={
                "engine": ENGINE_FILE,
                "precision": ctx.spec.precision,
                "strongly_typed": True,
                "device": settings.device,
                "profiles": [p.to_json() for p in profiles],
                "settings": settings.to_json(),
                "version_compatible": settings.version_compatible,
            },
            host_requirements={
                "cuda_compute_capability": gpu.compute_capability,
                "hardware_compatible": settings.hardware_compatible,
                "hardware_compatibility_level": level,
                "tensorrt_version": trt.__version__,
                "version_compatible": settings.version_compatible,
                "cuda_device": gpu.name,
                "cuda_driver": info.driver_version,
                "cuda_runtime": info.cuda_runtime,
            },
            notes=(*notes, *build_notes),
        )

    def load(self, artifact: Path, manifest: Manifest, options: EngineOptions) -> TensorRtEngine:
        """Check the GPU and TensorRT version against the manifest, then deserialize the engine."""
        config = manifest.engine_config
        check_engine_compat(manifest.host_requirements, cuda_info(), int(config.get("device", 0)))
        from duh.targets.tensorrt._runtime import TensorRtEngine

        return TensorRtEngine(
            artifact / str(config.get("engine", ENGINE_FILE)),
            config,
            [o.name for o in manifest.outputs],
            options,
        )
