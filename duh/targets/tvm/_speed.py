"""How fast ``tvm:cpu`` is on this host class, from a measurement and two host facts.

Relax has no x86 operator schedules and, in the apache-tvm wheel, no library to offload to (its
runtime links no oneDNN, BLAS or MKL), so every kernel of a TVM build is TVM's own code and
MetaSchedule tuning is the one route to fast kernels. On x86-64 CPUs with AVX-512, ONNX Runtime's
FP32 kernels are hand-written for that instruction set; ``benchmarks.tvm`` measured the best tuned
route against them (``MEASURED``). The rule that marks ``tvm:cpu`` slow uses only facts of the
host, never its name: the CPU is in a measured class (its machine and flags), the installed TVM
offloads to no library (its runtime registers no ``tvm.contrib.cblas/mkl/dnnl`` function and no
DNNL runtime), and that class's measured ratio is below ``SLOW_BELOW`` (more than 2x slower).
A host in no measured class gets no note: it was not measured.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from duh.host import HostInfo

__all__ = ["MEASURED", "SLOW_BELOW", "Measurement", "library_offload", "speed_note"]

# Slower than half of ONNX Runtime FP32's speed: "not within 2x".
SLOW_BELOW = 0.5

# What the runtime library registers when TVM was built with a CPU library to offload to.
_OFFLOAD_MARKERS = {
    b"tvm.contrib.cblas.": "cblas",
    b"tvm.contrib.mkl.": "mkl",
    b"tvm.contrib.dnnl.": "dnnl",
    b"DNNLJSONRuntime": "dnnl",
}


@dataclass(frozen=True, slots=True)
class Measurement:
    """The best tuned TVM route against ONNX Runtime FP32 on one host class, one run."""

    host_class: str
    machine: str
    cpu_flags: frozenset[str]
    speed_vs_ort_fp32: float
    route: str
    command: str
    tvm_version: str

    def matches(self, host: HostInfo) -> bool:
        """Whether ``host`` is in this class (same machine, every flag the class names)."""
        return host.machine == self.machine and self.cpu_flags <= host.cpu_flags


MEASURED = (
    Measurement(
        host_class="x86-64 with AVX-512",
        machine="x86_64",
        cpu_flags=frozenset({"avx512f"}),
        # Two interleaved runs on a 2-core Xeon (AVX-512, VNNI, AMX): 0.271x and 0.269x with 256
        # trials, weights prepacked (0.19-0.22x in ONNX layout; 512 trials earlier: 0.31x).
        speed_vs_ort_fp32=0.27,
        route="ResNet-50, batch 1, 2 threads, 256 MetaSchedule trials",
        command="python -m benchmarks.tvm --trials 256 --more 0",
        tvm_version="0.27",
    ),
)


@functools.cache
def library_offload() -> tuple[str, ...]:
    """The CPU libraries the installed TVM runtime can offload to (empty: none, or no TVM)."""
    spec = importlib.util.find_spec("tvm")
    if spec is None or not spec.submodule_search_locations:
        return ()
    found: set[str] = set()
    for location in spec.submodule_search_locations:
        for library in sorted(Path(location, "lib").glob("libtvm_runtime*.so")):
            try:
                data = library.read_bytes()
            except OSError:
                continue
            found.update(name for marker, name in _OFFLOAD_MARKERS.items() if marker in data)
    return tuple(sorted(found))


def speed_note(host: HostInfo) -> str | None:
    """Why ``tvm:cpu`` is slow on this host, or None when it is not known to be."""
    if library_offload():
        return None
    for measured in MEASURED:
        if measured.matches(host) and measured.speed_vs_ort_fp32 < SLOW_BELOW:
            return (
                f"slow on {measured.host_class}: tuned TVM {measured.tvm_version} ran "
                f"{measured.speed_vs_ort_fp32:.2f}x ONNX Runtime FP32 ({measured.route}; "
                f"{measured.command}); TVM here has no oneDNN/BLAS offload: build for cpu instead"
            )
    return None
