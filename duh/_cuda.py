"""CUDA on this host in detail: devices and their compute capability, driver, CUDA runtime and
TensorRT versions.

The driver is asked through its own library (``libcuda.so.1``, with ctypes: no CUDA Python
package needed), the CUDA runtime through ``libcudart``; both fall back to what ``nvidia-smi`` and
the installed packages say. Nothing here imports an engine, so ``duh targets``, target resolution
and the runtime's host checks can all use it cheaply. A host without a GPU gets a ``CudaInfo``
with no devices and a ``reason`` that says why, never an exception.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.metadata
import importlib.util
import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "NO_LIBCUDA",
    "TENSORRT_DISTRIBUTIONS",
    "CudaDevice",
    "CudaInfo",
    "bindings_mismatch",
    "cuda_bindings_version",
    "cuda_devices",
    "cuda_info",
    "decode_cuda_version",
    "parse_driver_version",
    "pick_devices",
    "tensorrt_version",
]

log = logging.getLogger(__name__)

# Distributions that install the `tensorrt` module, newest naming first.
TENSORRT_DISTRIBUTIONS = (
    "tensorrt",
    "tensorrt-cu13",
    "tensorrt-cu12",
    "tensorrt-cu11",
    "tensorrt-cu13-bindings",
    "tensorrt-cu12-bindings",
)
_CUDART_NAMES = ("libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0")
# CUdevice_attribute values from cuda.h.
_ATTR_CC_MAJOR = 75
_ATTR_CC_MINOR = 76
_CUDA_ERROR_NO_DEVICE = 100


@dataclass(frozen=True, slots=True)
class CudaDevice:
    """One NVIDIA GPU as the driver reports it."""

    index: int
    name: str
    compute_capability: str
    driver_version: str
    memory_mib: int


@dataclass(frozen=True, slots=True)
class CudaInfo:
    """The CUDA devices and software of this host; ``reason`` says why there is no device."""

    devices: tuple[CudaDevice, ...]
    driver_version: str | None
    cuda_driver_api: str | None
    cuda_runtime: str | None
    tensorrt: str | None
    reason: str | None

    @property
    def available(self) -> bool:
        """Whether at least one CUDA device can be used."""
        return bool(self.devices)

    def device(self, index: int = 0) -> CudaDevice | None:
        """The device with CUDA ordinal ``index``, or None."""
        return next((d for d in self.devices if d.index == index), None)

    def to_json(self) -> dict[str, Any]:
        """The form recorded in manifests and printed by ``--json``."""
        return {
            "devices": [
                {
                    "index": d.index,
                    "name": d.name,
                    "compute_capability": d.compute_capability,
                    "memory_mib": d.memory_mib,
                }
                for d in self.devices
            ],
            "driver_version": self.driver_version,
            "cuda_driver_api": self.cuda_driver_api,
            "cuda_runtime": self.cuda_runtime,
            "tensorrt": self.tensorrt,
            "reason": self.reason,
        }


def decode_cuda_version(value: int) -> str:
    """CUDA's integer version (``12040``) as people write it (``12.4``)."""
    return f"{value // 1000}.{(value % 1000) // 10}"


def parse_driver_version(text: str) -> str | None:
    """The driver version in ``/proc/driver/nvidia/version`` (``NVRM version: ... 550.54.15``)."""
    for line in text.splitlines():
        if not line.startswith("NVRM version"):
            continue
        for word in line.split():
            parts = word.split(".")
            if len(parts) >= 2 and all(p.isdigit() for p in parts):
                return word
    return None


def tensorrt_version() -> str | None:
    """The installed TensorRT version (from package metadata; nothing is imported)."""
    for dist in TENSORRT_DISTRIBUTIONS:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _driver_version_text() -> str | None:
    try:
        return parse_driver_version(
            Path("/proc/driver/nvidia/version").read_text(encoding="utf-8", errors="replace")
        )
    except OSError:
        return None


NO_LIBCUDA = "libcuda.so.1 not found, no NVIDIA driver installed"


def pick_devices(
    driver: list[CudaDevice], reason: str | None, smi: Any
) -> tuple[list[CudaDevice], str | None]:
    """libcuda's devices; nvidia-smi's (``smi()``) only when libcuda itself could not load.

    libcuda honours ``CUDA_VISIBLE_DEVICES`` (``""``: no device) and nvidia-smi ignores it, so
    "no device" from a loaded libcuda is the answer, not a reason to ask nvidia-smi.
    """
    if driver or reason != NO_LIBCUDA:
        return driver, reason
    # nvidia-smi sees devices in some containers where libcuda is not on the loader path.
    found = list(smi())
    return (found, None) if found else (driver, reason)


def bindings_mismatch(driver_api: str | None, bindings: str | None) -> str | None:
    """Why cuda-python ``bindings`` (a version) cannot run on a driver of CUDA ``driver_api``."""
    if not driver_api or not bindings:
        return None
    try:
        have, need = int(driver_api.split(".")[0]), int(bindings.split(".")[0])
    except ValueError:
        return None
    if need <= have:
        return None
    return (
        f"cuda-python {bindings} needs a CUDA {need} driver; this driver is CUDA {driver_api}: "
        f"pip install 'duh[gpu-cu{have}]'"
    )


def cuda_bindings_version() -> str | None:
    """The installed cuda-python bindings' version (``cuda-bindings``, else ``cuda-python``)."""
    for dist in ("cuda-bindings", "cuda-python"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _query_driver() -> tuple[list[CudaDevice], str | None, str | None]:
    """Devices and the driver's CUDA API version from libcuda; ([], None, reason) without one."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return [], None, NO_LIBCUDA
    status = lib.cuInit(0)
    if status == _CUDA_ERROR_NO_DEVICE:
        return [], None, "the NVIDIA driver reports no CUDA device"
    if status != 0:
        return [], None, f"the NVIDIA driver failed to initialize, CUDA error {status}"
    version = ctypes.c_int()
    ok = lib.cuDriverGetVersion(ctypes.byref(version)) == 0
    api = decode_cuda_version(version.value) if ok else None
    count = ctypes.c_int()
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return [], api, "the NVIDIA driver reports no CUDA device"
    driver = _driver_version_text() or "unknown"
    devices = []
    for index in range(count.value):
        handle = ctypes.c_int()
        if lib.cuDeviceGet(ctypes.byref(handle), index) != 0:
            continue
        name = ctypes.create_string_buffer(256)
        lib.cuDeviceGetName(name, 256, handle)
        major, minor = ctypes.c_int(), ctypes.c_int()
        lib.cuDeviceGetAttribute(ctypes.byref(major), _ATTR_CC_MAJOR, handle)
        lib.cuDeviceGetAttribute(ctypes.byref(minor), _ATTR_CC_MINOR, handle)
        memory = ctypes.c_size_t()
        lib.cuDeviceTotalMem_v2(ctypes.byref(memory), handle)
        devices.append(
            CudaDevice(
                index=index,
                name=name.value.decode(errors="replace"),
                compute_capability=f"{major.value}.{minor.value}",
                driver_version=driver,
                memory_mib=memory.value // (1 << 20),
            )
        )
    return devices, api, None if devices else "the NVIDIA driver reports no CUDA device"


@functools.cache
def cuda_devices() -> tuple[CudaDevice, ...]:
    """The CUDA devices the NVIDIA driver reports; empty when there is no driver or device."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    query = "index,name,compute_cap,driver_version,memory.total"
    try:
        out = subprocess.run(
            [smi, f"--query-gpu={query}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    devices = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 5:
            continue
        try:
            devices.append(CudaDevice(int(parts[0]), parts[1], parts[2], parts[3], int(parts[4])))
        except ValueError:
            continue
    return tuple(devices)


def _cudart_candidates() -> list[str]:
    names = list(_CUDART_NAMES)
    found = ctypes.util.find_library("cudart")
    if found:
        names.insert(0, found)
    # The CUDA runtime wheels (nvidia-cuda-runtime-cu12, ...) keep the library in site-packages.
    spec = importlib.util.find_spec("nvidia")
    roots = (spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        names.extend(str(p) for p in sorted(Path(root).glob("*/lib/libcudart.so*")))
    return names


def _query_runtime() -> str | None:
    for name in _cudart_candidates():
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        version = ctypes.c_int()
        if lib.cudaRuntimeGetVersion(ctypes.byref(version)) == 0 and version.value:
            return decode_cuda_version(version.value)
    for dist in ("nvidia-cuda-runtime", "nvidia-cuda-runtime-cu13", "nvidia-cuda-runtime-cu12"):
        try:
            return ".".join(importlib.metadata.version(dist).split(".")[:2])
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


@functools.cache
def cuda_info() -> CudaInfo:
    """Describe CUDA on this host (cached: devices do not come and go while duh runs)."""
    found, api, reason = _query_driver()
    devices, reason = pick_devices(found, reason, cuda_devices)
    driver = devices[0].driver_version if devices else _driver_version_text()
    info = CudaInfo(
        devices=tuple(devices),
        driver_version=driver if driver != "unknown" else None,
        cuda_driver_api=api,
        cuda_runtime=_query_runtime(),
        tensorrt=tensorrt_version(),
        reason=None if devices else f"no CUDA device: {reason or 'none found'}",
    )
    log.debug("CUDA on this host: %s", info)
    return info
