"""``duh doctor``: what this installation and host offer duh, and what is missing.

Engines and libraries with their versions (read from package metadata: nothing heavy is
imported, except ONNX Runtime, a core dependency, for its execution providers), the CPU
instruction sets duh's targets use, CUDA, the build cache's location and size, and for each
missing piece the pip extra that installs it.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from duh._cache import cache_dir
from duh._cuda import cuda_info, tensorrt_version
from duh._version import __version__
from duh.host import host_info
from duh.targets import package_version

__all__ = ["CacheUsage", "Component", "CpuFeature", "Diagnosis", "diagnose"]


@dataclass(frozen=True, slots=True)
class Component:
    """An engine or library duh can use: its installed version (None: missing) and pip extra."""

    name: str
    version: str | None
    extra: str
    purpose: str
    detail: str = ""

    @property
    def installed(self) -> bool:
        """Whether the package is installed."""
        return self.version is not None

    @property
    def install(self) -> str:
        """The command that installs it."""
        return "pip install duh" if self.extra == "core" else f"pip install 'duh[{self.extra}]'"

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "name": self.name,
            "installed": self.installed,
            "version": self.version,
            "extra": self.extra,
            "install": self.install,
            "purpose": self.purpose,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class CpuFeature:
    """A CPU instruction set a target relies on, and whether this CPU has it."""

    flag: str
    present: bool
    used_for: str


@dataclass(frozen=True, slots=True)
class CacheUsage:
    """The build cache's root, where its location comes from, and what it holds."""

    path: str
    source: str
    bytes: int
    files: int
    kinds: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "path": self.path,
            "source": self.source,
            "bytes": self.bytes,
            "files": self.files,
            "kinds": dict(self.kinds),
        }


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """Everything ``duh doctor`` reports."""

    duh_version: str
    python: str
    platform: str
    components: tuple[Component, ...]
    cpu_model: str
    cores: int
    cpu_features: tuple[CpuFeature, ...]
    cuda: dict[str, Any]
    cache: CacheUsage
    notes: tuple[str, ...]

    @property
    def missing(self) -> tuple[Component, ...]:
        """The components that are not installed."""
        return tuple(c for c in self.components if not c.installed)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` document (schema ``duh.doctor/1``)."""
        return {
            "schema": "duh.doctor/1",
            "duh_version": self.duh_version,
            "python": self.python,
            "platform": self.platform,
            "components": [c.to_json() for c in self.components],
            "missing": [{"name": c.name, "install": c.install} for c in self.missing],
            "host": {
                "cpu": self.cpu_model,
                "cores": self.cores,
                "cpu_flags": {f.flag: f.present for f in self.cpu_features},
                "cpu_flag_use": {f.flag: f.used_for for f in self.cpu_features},
            },
            "cuda": self.cuda,
            "cache": self.cache.to_json(),
            "notes": list(self.notes),
        }


# The instruction sets duh's CPU targets care about (/proc/cpuinfo names), and what for.
_CPU_FEATURES = (
    ("avx2", "fp32 kernels of every CPU engine"),
    ("fma", "fp32 kernels of every CPU engine"),
    ("avx512f", "wider fp32 kernels; TVM's -mattr"),
    ("avx512_vnni", "fast int8 (cpu-int8)"),
    ("avx_vnni", "fast int8 on CPUs without AVX-512"),
    ("avx512_bf16", "cpu-bf16 (OpenVINO)"),
    ("avx512_fp16", "cpu-fp16 (OpenVINO)"),
    ("amx_tile", "AMX tiles (int8 and bf16 several times faster than fp32)"),
    ("amx_int8", "AMX int8 (cpu-int8)"),
    ("amx_bf16", "AMX bf16 (cpu-bf16)"),
)


def _ort_detail(version: str | None) -> str:
    if version is None:
        return ""
    try:
        import onnxruntime
    except ImportError:
        return "installed but not importable"
    return "providers: " + ", ".join(onnxruntime.get_available_providers())


def _components() -> tuple[Component, ...]:
    ort = package_version("onnxruntime")
    ort_gpu = package_version("onnxruntime-gpu")
    return (
        Component(
            "onnxruntime", ort, "core", "ONNX Runtime CPU engine", _ort_detail(ort or ort_gpu)
        ),
        Component("openvino", package_version("openvino"), "openvino", "OpenVINO CPU engine"),
        Component("apache-tvm", package_version("apache-tvm"), "tvm", "Apache TVM (tvm:cpu)"),
        Component("tensorrt", tensorrt_version(), "gpu", "TensorRT engines (cuda, cuda-int8)"),
        Component(
            "onnxruntime-gpu",
            ort_gpu,
            "gpu",
            "ONNX Runtime CUDA/TensorRT providers (onnxruntime:cuda-*)",
        ),
        Component(
            "cuda-python", package_version("cuda-python"), "gpu", "CUDA bindings for TensorRT"
        ),
        Component("aiohttp", package_version("aiohttp"), "serve", "duh serve (HTTP)"),
        Component("grpcio", package_version("grpcio"), "serve", "duh serve --grpc-port"),
        Component("matplotlib", package_version("matplotlib"), "bench", "duh bench --plot"),
        Component("pillow", package_version("pillow"), "images", "image calibration/check data"),
    )


def _cache_usage() -> CacheUsage:
    from_env = bool(os.environ.get("DUH_CACHE_DIR"))
    root = cache_dir("")
    files, total, kinds = 0, 0, {}
    for entry in sorted(root.iterdir()):
        size = 0
        # Symlinked entries (a shared models directory) are not this cache's bytes.
        if entry.is_dir() and not entry.is_symlink():
            for dirpath, _, names in os.walk(entry):
                for name in names:
                    path = Path(dirpath, name)
                    if not path.is_symlink():
                        size += path.stat().st_size
                        files += 1
        elif entry.is_file() and not entry.is_symlink():
            size = entry.stat().st_size
            files += 1
        kinds[entry.name] = size
        total += size
    return CacheUsage(str(root), "DUH_CACHE_DIR" if from_env else "default", total, files, kinds)


def _notes(components: tuple[Component, ...], flags: frozenset[str], cuda: Any) -> list[str]:
    notes = []
    have = {c.name: c for c in components}
    if have["onnxruntime"].installed and have["onnxruntime-gpu"].installed:
        notes.append(
            "onnxruntime and onnxruntime-gpu are both installed and share one module: whichever "
            "was installed last wins; keep only one (see README, GPU hosts)"
        )
    if not {"amx_int8", "amx_bf16"} & flags:
        notes.append("no AMX: cpu-bf16 may be slower than fp32 here; measure before choosing")
    if not {"avx512_vnni", "avx_vnni", "amx_int8"} & flags:
        notes.append("no VNNI: int8 kernels run without dot-product instructions (smaller gains)")
    if not cuda.devices:
        notes.append(f"CUDA targets unavailable: {cuda.reason or 'no CUDA device'}")
    return notes


def diagnose() -> Diagnosis:
    """Describe this installation and host for ``duh doctor``."""
    host = host_info()
    cuda = cuda_info()
    components = _components()
    features = tuple(CpuFeature(f, host.has(f), use) for f, use in _CPU_FEATURES)
    return Diagnosis(
        duh_version=__version__,
        python=sys.version.split()[0],
        platform=platform.platform(),
        components=components,
        cpu_model=host.cpu_model,
        cores=host.cores,
        cpu_features=features,
        cuda=cuda.to_json(),
        cache=_cache_usage(),
        notes=tuple(_notes(components, host.cpu_flags, cuda)),
    )
