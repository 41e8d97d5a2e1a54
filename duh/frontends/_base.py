"""What a front end is: it turns a framework's saved model into ONNX, and keeps a way back.

A front end claims a path by its form (a suffix, a directory layout, ``module.py:factory``),
exports it to an ONNX model, and hands back a *reference*: a callable that runs the original
framework on the same inputs, so the artifact is checked against the framework's own outputs,
not only against the ONNX it exported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from duh.errors import ConfigError

__all__ = [
    "Exported",
    "Frontend",
    "FrontendOptions",
    "QuantizeRequest",
    "Reference",
    "frontend",
    "registered",
]

# Runs the original framework: ONNX input names -> arrays in, ONNX output names -> arrays out.
Reference = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True, slots=True)
class FrontendOptions:
    """What the user said about the export (the same options whatever the framework)."""

    # Running code from a model file (pickle, joblib, TorchScript, module.py) needs this.
    trust_code: bool = False
    # --shape NAME=1x3x224x224 fixes sizes; NAME=min:opt:max makes the axes that differ dynamic.
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    shape_ranges: Mapping[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = field(
        default_factory=dict
    )
    # --dynamic NAME:0 (axes of an input that stay dynamic in the export).
    dynamic: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    # The ONNX opset to export to (None: the front end's default).
    opset: int | None = None


@dataclass(frozen=True, slots=True)
class QuantizeRequest:
    """What a framework-side quantizer (neural-compressor on PyTorch) is given."""

    # Calibration inputs, by ONNX input name (the build's --calib samples).
    feeds: Sequence[Mapping[str, np.ndarray]]
    # The quantizer's recipe: "static" (INT8, PT2E), "smoothquant", "rtn" (weight-only).
    recipe: str = "static"
    # Accuracy budget (--max-drop): a relative loss the quantizer's autotune may spend.
    max_drop: float | None = None
    # Inputs the autotune judges candidates on (the build's check inputs).
    eval_feeds: Sequence[Mapping[str, np.ndarray]] = ()


@dataclass(frozen=True, slots=True)
class Exported:
    """An exported model, how it was made, and the way back to the framework."""

    model: onnx.ModelProto
    # Recorded in the manifest: {"frontend": name, "version": "2.13.0", ...export settings}.
    record: Mapping[str, Any]
    # Runs the original model; None where the framework cannot run it here.
    reference: Reference | None = None
    # Example inputs the source came with (module.py:factory's example_inputs), by ONNX input name.
    sample_inputs: Mapping[str, np.ndarray] | None = None
    # Quantizes in the framework before export (--quantizer): the quantized model, exported,
    # with its reference still the original model. None: the front end has no quantizer.
    quantize: Callable[[QuantizeRequest], Exported] | None = None


@dataclass(frozen=True, slots=True)
class Frontend:
    """One framework's way into duh."""

    name: str  # "torch", "tensorflow", "sklearn"
    extra: str  # the pip extra that installs it: duh[torch]
    summary: str  # one line for --help and errors: "PyTorch (.pt2, module.py:factory, .pt)"
    claims: Callable[[str], bool]  # does this path (as the user typed it) belong to this front end?
    export: Callable[[str, FrontendOptions], Exported]


_REGISTRY: dict[str, Frontend] = {}


def frontend(entry: Frontend) -> Frontend:
    """Register a front end (a duplicate name is an error)."""
    if entry.name in _REGISTRY:
        raise ConfigError(f"front end {entry.name!r} is registered twice")
    _REGISTRY[entry.name] = entry
    return entry


def registered() -> dict[str, Frontend]:
    """Every registered front end, by name."""
    return dict(_REGISTRY)


def is_onnx(path: str) -> bool:
    """A path duh reads as ONNX itself (no front end)."""
    return Path(path).suffix.lower() == ".onnx"
