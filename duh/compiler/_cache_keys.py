"""The keys of the build cache: sha256 over everything that shapes a stage's output.

A key holds the stage's input (model bytes or the source's sha256), its name, its canonical
config (sorted JSON), the versions of duh and of each library the stage runs, and the host class
where the output depends on it. Versions are per stage: an OpenVINO upgrade invalidates the
artifacts OpenVINO built, not the models the passes made before it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from duh._version import __version__
from duh.host import NOTABLE_CPU_FLAGS, HostInfo, cpu_flags

__all__ = [
    "KEY_FORMAT",
    "canonical",
    "cpu_class",
    "engine_versions",
    "feeds_digest",
    "host_class",
    "pass_versions",
    "source_file_digest",
    "stage_key",
]

# Bumped when a stage's stored form changes: every older key then misses.
KEY_FORMAT = "duh-stage-1"

# What each engine ships as (the first installed distribution of each list counts).
_ENGINE_DISTRIBUTIONS = {
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"),
    "openvino": ("openvino",),
    "tvm": ("apache-tvm", "tvm", "mlc-ai-nightly-cpu"),
    "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu13"),
}
# Every pass reads and writes onnx, computes with numpy and runs ONNX Runtime (folding,
# calibration); some run more.
_PASS_BASE = ("onnx", "numpy", "onnxruntime")
_PASS_EXTRA = {
    "simplify": ("onnxsim", "onnx-graphsurgeon"),
    "bf16": ("ml-dtypes",),
    "fp16": ("ml-dtypes",),
}


@functools.cache
def _version(distributions: tuple[str, ...]) -> str:
    for name in distributions:
        try:
            return f"{name}=={metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    return f"{distributions[0]}==absent"


@functools.cache
def duh_build() -> str:
    """duh's version and a sha256 of its own source files.

    An editable install keeps its version while its code changes: keyed on the version alone, a
    changed pass would be served the outputs its old code cached.
    """
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return f"{__version__}+{digest.hexdigest()}"


def engine_versions(engines: Iterable[str]) -> dict[str, str]:
    """duh's build and each engine's installed version (a plugin duh does not know: by name)."""
    out = {"duh": duh_build()}
    for engine in sorted(set(engines)):
        out[engine] = _version(_ENGINE_DISTRIBUTIONS.get(engine, (engine,)))
    return out


def pass_versions(names: Iterable[str]) -> dict[str, str]:
    """duh's build and the versions of the libraries the passes ``names`` run."""
    libraries = set(_PASS_BASE)
    for name in names:
        libraries.update(_PASS_EXTRA.get(name, ()))
    return {"duh": duh_build(), **{lib: _version((lib,)) for lib in sorted(libraries)}}


def host_class(host: HostInfo, cuda: bool = False) -> dict[str, Any]:
    """What of the host an output depends on: the CPU's architecture and notable instruction
    sets (kernels and calibration ranges follow them) and, for CUDA builds, each device's
    compute capability."""
    out: dict[str, Any] = {"machine": host.machine, "cpu_flags": host.notable_flags}
    if cuda:
        out["cuda"] = sorted(str(d.compute_capability) for d in host.cuda)
    return out


def canonical(value: Any) -> str:
    """``value`` as sorted, compact JSON (tuples as lists, paths and the rest as strings)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def feeds_digest(feeds: Sequence[Mapping[str, np.ndarray]]) -> str:
    """sha256 over input arrays: each name, dtype, shape and bytes, in order."""
    digest = hashlib.sha256()
    for feed in feeds:
        for name in sorted(feed):
            array = np.ascontiguousarray(feed[name])
            digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
            digest.update(array.tobytes())
        digest.update(b"\1")
    return digest.hexdigest()


def source_file_digest(path: Path) -> str:
    """sha256 of a source file's bytes; of a directory's (a SavedModel), every file's relative
    path and bytes, in sorted order."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def stage_key(stage: str, inputs: str, config: Mapping[str, Any]) -> str:
    """The full sha256 of one stage: its name, its input's digest and its canonical config."""
    digest = hashlib.sha256()
    for part in (KEY_FORMAT, stage, inputs, canonical(config)):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def cpu_class() -> dict[str, Any]:
    """The CPU part of ``host_class`` without asking for CUDA devices (what passes depend on)."""
    return {
        "machine": platform.machine(),
        "cpu_flags": [f for f in NOTABLE_CPU_FLAGS if f in cpu_flags()],
    }
