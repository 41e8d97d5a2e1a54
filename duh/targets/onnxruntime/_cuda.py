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

import contextlib
import hashlib
import io
import logging
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
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
    "check_active",
    "choose_provider",
    "compile_cuda",
    "default_passes",
    "engine_cache_key",
    "load_cuda",
    "probe_tensorrt",
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


def choose_provider(
    options: Mapping[str, str],
    providers: Sequence[str],
    probe: Callable[[], str | None] = lambda: None,
) -> str:
    """``tensorrt`` or ``cuda``: the ``ep`` option, else TensorRT's provider when it works.

    onnxruntime-gpu lists TensorRT's provider even where libnvinfer cannot load: ``probe()``
    opens a one-node session on it and says why it failed (None: it works).
    """
    wanted = options.get("ep", "").strip().lower()
    if wanted and wanted not in _EPS:
        raise ConfigError(f"--option ep={wanted!r} is not one of: {', '.join(_EPS)}")
    if wanted:
        if _EPS[wanted] not in providers:
            raise ConfigError(
                f"--option ep={wanted}: this onnxruntime lacks {_EPS[wanted]} "
                f"(it has {', '.join(providers)})"
            )
        if wanted == "tensorrt":
            why = probe()
            if why:
                raise TargetError(f"--option ep=tensorrt: {TRT_EP} does not work here: {why}")
        return wanted
    if TRT_EP not in providers:
        return "cuda"
    why = probe()
    if why:
        log.warning("%s is listed but does not work (%s); using the CUDA provider", TRT_EP, why)
        return "cuda"
    return "tensorrt"


def check_active(ep: str, active: Sequence[str], what: str) -> None:
    """Refuse a session whose first provider is not ``ep``'s (ORT's silent fallback)."""
    want = _EPS[ep]
    if not active or active[0] != want:
        raise TargetError(
            f"onnxruntime {what} on {active[0] if active else 'no provider'} instead of {want} "
            f"(ORT fell back: check the CUDA, cuDNN{' and TensorRT' if ep == 'tensorrt' else ''} "
            "libraries it needs; -vv shows ORT's log)"
        )


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """ORT prints its "EP Error ... Falling back" to stdout, which would break ``--json``."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        for line in buffer.getvalue().splitlines():
            if line.strip():
                log.info("onnxruntime: %s", line.strip())


def probe_tensorrt(ort: Any) -> str | None:
    """Open a one-node model on TensorRT's provider; why it fell back, or None when it works."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        with _quiet_stdout(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "not in available provider names": answered below
            session = ort.InferenceSession(
                onnx.ModelProto.SerializeToString(model), so,
                providers=[TRT_EP, "CPUExecutionProvider"],
            )
    except ort_errors() as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    active = session.get_providers()
    return None if active and active[0] == TRT_EP else "libnvinfer did not load (-vv shows why)"


def engine_cache_key(paths: Sequence[Path]) -> str:
    """The content hash naming an artifact's TensorRT engine cache.

    ORT names cached engines from the model's file name, tensor names and versions, not its
    weights or Q/DQ scales: artifacts sharing one folder would load each other's engines.
    """
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:32]


def provider_options(
    ep: str, precision: str, device: int, workspace_mb: int | None, profile_opts: Mapping[str, str]
) -> dict[str, str]:
    """The provider options recorded in the artifact (cache paths are added at load)."""
    opts = {"device_id": str(device)}
    if ep == "cuda":
        # The CUDA provider's use_tf32 defaults on: TF32 keeps 10 mantissa bits, not fp32's 23.
        if precision == "fp32":
            opts["use_tf32"] = "0"
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
    device = {"device_id": opts.get("device_id", "0"), "use_tf32": "0"}
    if ep == "tensorrt":
        # Engines and timings are specific to the GPU that loads the artifact: keep them in its
        # cache, not in the (read-only, hashed) artifact. Engines go in a folder of their own
        # per artifact content; kernel timings do not depend on weights and are shared.
        root = cache_dir("onnxruntime") / "trt-engines"
        key = str(config.get("engine_cache_key", "")) or "unkeyed"
        opts.setdefault("trt_engine_cache_path", str(root / key))
        opts.setdefault("trt_timing_cache_path", str(root))
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
    ep = choose_provider(ctx.options, providers, lambda: probe_tensorrt(ort))
    settings = settings_from_options(ctx.options)
    notes: list[str] = [f"execution provider: {_EPS[ep]}"]
    profiles: tuple[InputProfile, ...] = ()
    if ep == "tensorrt":
        profiles = input_profiles(model, profile_ranges(ctx.options), settings.max_batch)
        if ctx.spec.precision == "int8":
            model, more = prepare_int8(model)
            notes += more
        if ctx.spec.precision == "fp32":
            notes.append(
                "TensorRT may run fp32 matmuls and convolutions in TF32 (ORT's TensorRT provider "
                "has no option to clear it; NVIDIA_TF32_OVERRIDE=0 at load, or ep=cuda, is fp32)"
            )
    elif ctx.spec.precision == "int8":
        notes.append("the CUDA provider runs Q/DQ models without int8 kernels for most ops")
    written = save_onnx(model, out_dir / MODEL_FILE)
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
        "engine_cache_key": engine_cache_key(list(written)),
    }
    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        with _quiet_stdout():
            session = ort.InferenceSession(
                str(out_dir / MODEL_FILE), so, providers=_providers(config)
            )
    except ort_errors() as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TargetError(f"onnxruntime cannot open the model on the GPU: {first}") from None
    check_active(ep, session.get_providers(), "opened the model")
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
    if config.get("provider") == "tensorrt" and not config.get("engine_cache_key"):
        # Artifacts from before the per-artifact key: hash the model files here.
        files = [p for p in (model, model.with_suffix(model.suffix + ".data")) if p.is_file()]
        config = {**config, "engine_cache_key": engine_cache_key(files)}
    with _quiet_stdout():
        engine = OnnxRuntimeEngine(model, options, _providers(config), " on the GPU")
    check_active(str(config.get("provider", "cuda")), engine.session.get_providers(), "loaded it")
    return engine
