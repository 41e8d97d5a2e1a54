"""What this host offers: CPU instruction sets, core count, CUDA devices.

Used by target resolution (which engine fits) and by the runtime (does an artifact's host
requirement hold here). Kept free of engine imports so both sides can use it cheaply.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass

from duh._cuda import CudaDevice, cuda_devices, cuda_info

__all__ = [
    "NOTABLE_CPU_FLAGS",
    "CudaDevice",
    "HostInfo",
    "cpu_flags",
    "cuda_devices",
    "host_info",
    "int8_dot_saturates",
]

# The flags of x86 int8 dot products that add u8 x s8 products into int32 (exact).
_INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})

# The instruction sets duh cares about, with the /proc/cpuinfo flag that names each.
NOTABLE_CPU_FLAGS = (
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)


@dataclass(frozen=True, slots=True)
class HostInfo:
    """A summary of the host, recorded in manifests and shown by ``duh targets``."""

    machine: str
    cpu_model: str
    cores: int
    cpu_flags: frozenset[str]
    cuda: tuple[CudaDevice, ...]

    def has(self, flag: str) -> bool:
        """Whether the CPU reports ``flag`` (a /proc/cpuinfo name such as ``avx512_vnni``)."""
        return flag in self.cpu_flags

    @property
    def notable_flags(self) -> list[str]:
        """The instruction sets relevant to inference that this CPU has, in a fixed order."""
        return [f for f in NOTABLE_CPU_FLAGS if f in self.cpu_flags]


@functools.cache
def _cpuinfo() -> tuple[str, frozenset[str]]:
    model, flags = platform.processor() or platform.machine(), frozenset[str]()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", platform.machine()):
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = frozenset(value.split())
    except OSError:
        pass
    return model, flags


def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of this host (empty where the OS does not tell)."""
    return _cpuinfo()[1]


def int8_dot_saturates(flags: frozenset[str] | None = None, machine: str | None = None) -> bool:
    """Whether x86 int8 kernels here add u8 x s8 products in pairs into saturating int16
    (``vpmaddubsw``: no VNNI or AMX), so 8-bit weights overflow where 7-bit ones do not."""
    flags = cpu_flags() if flags is None else flags
    machine = platform.machine() if machine is None else machine
    return machine in ("x86_64", "AMD64") and not flags & _INT8_DOT_FLAGS


def host_info() -> HostInfo:
    """Describe this host."""
    model, flags = _cpuinfo()
    return HostInfo(
        machine=platform.machine(),
        cpu_model=model,
        cores=os.cpu_count() or 1,
        cpu_flags=flags,
        cuda=cuda_info().devices,  # the driver's own device list; nvidia-smi's without one
    )
