"""ONNX Runtime on NVIDIA GPUs: the ``onnxruntime`` engine for cuda targets.

Runs through ORT's TensorRT execution provider when this onnxruntime has it (TensorRT engines
built and cached on first load, per GPU), else through its CUDA provider; ``--option ep=cuda`` or
``ep=tensorrt`` picks one. The artifact holds the pipeline's ONNX model and the provider settings.

The GPU build of ONNX Runtime is the ``onnxruntime-gpu`` wheel, which installs the same
``onnxruntime`` module as the CPU wheel: an environment holds one or the other. With both
installed, pip mixes their files and whichever was installed last wins, so ``duh[gpu]`` is meant
for an environment where the CPU wheel was removed first (``pip uninstall -y onnxruntime``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from duh._cache import cache_dir
from duh._cuda import cuda_info
from duh._ort_errors import ort_errors
from duh.errors import ConfigError, TargetError
from duh.host import HostInfo
from duh.runtime.contract import EngineOptions
from duh.targets._base import CompileContext, CompileResult, PassSpec, TargetSpec
from duh.targets._gpu import (
    InputProfile,
    gpu_default_passes,
    input_profiles,
    prepare_int8,
    profile_ranges,
    settings_from_options,
    trt_ep_profile_options,
)
from duh.targets._util import import_engine, package_version, save_onnx
from duh.targets.onnxruntime._engine import OnnxRuntimeEngine

if TYPE_CHECKING:
    import onnx

    from duh.runtime.contract import Manifest

__all__ = [
    "CUDA_EP",
    "TRT_EP",
    "choose_provider",
    "compile_cuda",
    "default_passes",
    "load_cuda",
    "provider_options",
    "unavailable_reason",
]

log = logging.getLogger(__name__)

CUDA_EP = "CUDAExecutionProvider"
TRT_EP = "TensorrtExecutionProvider"
MODEL_FILE = "model.onnx"
_EPS = {"tensorrt": TRT_EP, "cuda": CUDA_EP}


def _ort() -> Any:
    return import_engine("onnxruntime", "onnxruntime-gpu", "gpu", "onnxruntime on CUDA")


def _both_wheels() -> bool:
    installed = [package_version(d) for d in ("onnxruntime", "onnxruntime-gpu")]
    return all(v is not None for v in installed)


def unavailable_reason(
    precision: str, host: HostInfo, providers: Sequence[str] | None = None
) -> str | None:
    """Why ORT cannot run cuda-``precision`` on ``host`` (no GPU, or onnxruntime's CPU build)."""
    if not host.cuda:
        return cuda_info().reason or "no CUDA device"
    if providers is None:
        providers = _ort().get_available_providers()
    if CUDA_EP not in providers:
        return (
            "this onnxruntime is the CPU build (no CUDAExecutionProvider): "
            "pip uninstall -y onnxruntime && pip install 'duh[gpu]'"
        )
    return None


def default_passes(spec: TargetSpec) -> list[PassSpec]:
    """Clean-up; then fp16 conversion or symmetric Q/DQ (what ORT's TensorRT provider needs)."""
    return gpu_default_passes(spec)


def choose_provider(options: Mapping[str, str], providers: Sequence[str]) -> str:
    """``tensorrt`` or ``cuda``: the ``ep`` option, else TensorRT's provider when present."""
    wanted = options.get("ep", "").strip().lower()
    if wanted and wanted not in _EPS:
        raise ConfigError(f"--option ep={wanted!r} is not one of: {', '.join(_EPS)}")
    if wanted:
        if _EPS[wanted] not in providers:
            raise ConfigError(
                f"--option ep={wanted}: this onnxruntime lacks {_EPS[wanted]} "
                f"(it has {', '.join(providers)})"
            )
        return wanted
    return "tensorrt" if TRT_EP in providers else "cuda"


def provider_options(
    ep: str, precision: str, device: int, workspace_mb: int | None, profile_opts: Mapping[str, str]
) -> dict[str, str]:
    """The provider options recorded in the artifact (cache paths are added at load)."""
    opts = {"device_id": str(device)}
    if ep == "cuda":
        return opts
    opts.update(
        {
            "trt_fp16_enable": str(precision == "fp16"),
            "trt_int8_enable": str(precision == "int8"),
            "trt_engine_cache_enable": "True",
            "trt_timing_cache_enable": "True",
        }
    )
    if workspace_mb:
        opts["trt_max_workspace_size"] = str(workspace_mb << 20)
    opts.update(profile_opts)
    return opts


def _providers(config: Mapping[str, Any]) -> list[tuple[str, dict[str, str]]]:
    ep = str(config.get("provider", "cuda"))
    opts = {str(k): str(v) for k, v in dict(config.get("provider_options", {})).items()}
    device = {"device_id": opts.get("device_id", "0")}
    if ep == "tensorrt":
        # Engines and timings are specific to the GPU that loads the artifact: keep them in its
        # cache, not in the (read-only, hashed) artifact.
        engines = cache_dir("onnxruntime") / "trt-engines"
        opts.setdefault("trt_engine_cache_path", str(engines))
        opts.setdefault("trt_timing_cache_path", str(engines))
        return [(TRT_EP, opts), (CUDA_EP, device), ("CPUExecutionProvider", {})]
    return [(CUDA_EP, opts), ("CPUExecutionProvider", {})]


def compile_cuda(model: onnx.ModelProto, ctx: CompileContext, out_dir: Path) -> CompileResult:
    """Save the pipeline's model with the provider settings, and check ORT opens it on the GPU."""
    ort = _ort()
    providers = ort.get_available_providers()
    reason = unavailable_reason(ctx.spec.precision, ctx.host, providers)
    if reason:
        raise TargetError(f"onnxruntime cannot build {ctx.spec.name}: {reason}")
    if _both_wheels():
        log.warning(
            "both onnxruntime and onnxruntime-gpu are installed; they share one module, so the "
            "last installed wins: uninstall both, then pip install 'duh[gpu]'"
        )
    ep = choose_provider(ctx.options, providers)
    settings = settings_from_options(ctx.options)
    notes: list[str] = [f"execution provider: {_EPS[ep]}"]
    profiles: tuple[InputProfile, ...] = ()
    if ep == "tensorrt":
        profiles = input_profiles(model, profile_ranges(ctx.options), settings.max_batch)
        if ctx.spec.precision == "int8":
            model, more = prepare_int8(model)
            notes += more
    elif ctx.spec.precision == "int8":
        notes.append("the CUDA provider runs Q/DQ models without int8 kernels for most ops")
    save_onnx(model, out_dir / MODEL_FILE)
    config: dict[str, Any] = {
        "model": MODEL_FILE,
        "device": "cuda",
        "provider": ep,
        "provider_options": provider_options(
            ep,
            ctx.spec.precision,
            settings.device,
            settings.workspace_mb,
            trt_ep_profile_options(profiles),
        ),
        "profiles": [p.to_json() for p in profiles],
    }
    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        ort.InferenceSession(str(out_dir / MODEL_FILE), so, providers=_providers(config))
    except ort_errors() as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TargetError(f"onnxruntime cannot open the model on the GPU: {first}") from None
    info = cuda_info()
    gpu = info.device(settings.device) or info.devices[0]
    return CompileResult(
        engine_version=ort.__version__,
        engine_config=config,
        # ORT builds its engines on the GPU that loads the artifact: any CUDA GPU will do.
        host_requirements={
            "cuda_compute_capability": gpu.compute_capability,
            "hardware_compatible": True,
            "cuda_device": gpu.name,
            "cuda_driver": info.driver_version,
            "cuda_runtime": info.cuda_runtime,
        },
        notes=tuple(notes),
    )


def load_cuda(
    artifact: Path, manifest: Manifest, options: EngineOptions
) -> OnnxRuntimeEngine:
    """Open an onnxruntime cuda artifact: an ORT session on the TensorRT or CUDA provider."""
    config = manifest.engine_config
    model = artifact / str(config.get("model", MODEL_FILE))
    engine = OnnxRuntimeEngine(model, options, _providers(config), " on the GPU")
    active = engine.session.get_providers()
    if CUDA_EP not in active and TRT_EP not in active:
        raise TargetError(
            f"onnxruntime fell back to {', '.join(active)} for {model.name}; check the CUDA "
            "and cuDNN libraries onnxruntime-gpu needs (-vv shows ORT's log)"
        )
    return engine
