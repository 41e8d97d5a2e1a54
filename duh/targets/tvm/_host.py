"""The LLVM target TVM compiles for: this host's CPU model and instruction sets.

LLVM names the CPU (``-mcpu``) from its model number, which hypervisors often misreport: a VM can
look like one CPU while exposing the instruction sets of another. So ``-mattr`` reconciles the
two: an instruction set the OS reports (``/proc/cpuinfo``) but ``-mcpu`` lacks is added, one
``-mcpu`` implies but the OS does not report is removed. The instruction sets the compiled code may
then use become the artifact's host requirements.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from duh.host import NOTABLE_CPU_FLAGS, HostInfo

__all__ = ["LLVM_TO_CPUINFO", "LlvmTarget", "host_llvm_target", "llvm_target", "physical_cores"]

# LLVM feature -> /proc/cpuinfo flag, for the instruction sets that matter to inference code.
LLVM_TO_CPUINFO = {
    "avx": "avx",
    "avx2": "avx2",
    "fma": "fma",
    "f16c": "f16c",
    "avx512f": "avx512f",
    "avx512bw": "avx512bw",
    "avx512vl": "avx512vl",
    "avx512dq": "avx512dq",
    "avx512cd": "avx512cd",
    "avx512vnni": "avx512_vnni",
    "avxvnni": "avx_vnni",
    "avx512bf16": "avx512_bf16",
    "avx512fp16": "avx512_fp16",
    "amx-tile": "amx_tile",
    "amx-int8": "amx_int8",
    "amx-bf16": "amx_bf16",
}


@dataclass(frozen=True, slots=True)
class LlvmTarget:
    """An LLVM CPU target for TVM and the CPU flags code compiled for it may need."""

    mcpu: str
    mattr: tuple[str, ...]
    num_cores: int
    required_flags: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """The target as TVM's JSON form (``tvm.target.Target(this)``)."""
        target: dict[str, Any] = {"kind": "llvm", "mcpu": self.mcpu, "num-cores": self.num_cores}
        if self.mattr:
            target["mattr"] = list(self.mattr)
        return target

    def text(self) -> str:
        """A stable string of the target (for cache keys and the manifest)."""
        return json.dumps(self.to_json(), sort_keys=True)


def physical_cores() -> int:
    """Physical CPU cores this process may use (hyper-threads not counted)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    cores: set[tuple[str, str]] = set()
    siblings = 0
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            physical, core = "", ""
            for line in fh:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "physical id":
                    physical = value
                elif key == "core id":
                    core = value
                    cores.add((physical, core))
                    siblings += 1
    except OSError:
        return max(usable, 1)
    per_core = max(siblings // len(cores), 1) if cores else 1
    return max(usable // per_core, 1)


def _ordered(flags: Iterable[str]) -> tuple[str, ...]:
    wanted = set(flags)
    known = [f for f in NOTABLE_CPU_FLAGS if f in wanted]
    return (*known, *sorted(wanted - set(known)))


def llvm_target(
    cpu_flags: frozenset[str], system_cpu: str, cpu_features: Iterable[str], cores: int
) -> LlvmTarget:
    """The target for a CPU LLVM calls ``system_cpu`` (implying ``cpu_features``) whose OS
    reports ``cpu_flags``. With no flags from the OS, ``-mcpu`` is trusted as it is."""
    implied = set(cpu_features)
    if not cpu_flags:
        required = [LLVM_TO_CPUINFO[f] for f in LLVM_TO_CPUINFO if f in implied]
        return LlvmTarget(system_cpu, (), cores, _ordered(required))
    mattr: list[str] = []
    enabled = set(implied)
    for feature, flag in LLVM_TO_CPUINFO.items():
        if flag in cpu_flags and feature not in implied:
            mattr.append(f"+{feature}")
            enabled.add(feature)
        elif feature in implied and flag not in cpu_flags:
            mattr.append(f"-{feature}")
            enabled.discard(feature)
    required = [LLVM_TO_CPUINFO[f] for f in LLVM_TO_CPUINFO if f in enabled]
    return LlvmTarget(system_cpu, tuple(mattr), cores, _ordered(required))


def host_llvm_target(host: HostInfo) -> LlvmTarget:
    """The LLVM target for this host (asks TVM's LLVM for the CPU name and its features)."""
    import tvm
    from tvm.target import codegen

    cpu = str(codegen.llvm_get_system_cpu())
    features = codegen.llvm_get_cpu_features(tvm.target.Target({"kind": "llvm", "mcpu": cpu}))
    return llvm_target(host.cpu_flags, cpu, {str(f) for f in features}, physical_cores())
