"""OpenVINO's ONNX frontend: converting a model, and reading its errors."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from duh.errors import TargetError
from duh.runtime import TensorSpec, synthetic_shapes
from duh.targets._base import CompileResult
from duh.targets._util import import_engine, save_onnx
from duh.targets.openvino._specialize import squeeze_ifs_to_squeeze

if TYPE_CHECKING:
    import onnx

__all__ = ["check_inputs", "compile_error", "compiled", "convert", "ov_module", "reason"]

log = logging.getLogger(__name__)

# The CPU plugin's refusals that fixed input sizes cure ("Squeeze operation with dynamic rank").
_DYNAMIC = re.compile(r"dynamic (rank|shape)", re.IGNORECASE)
_ORT_ADVICE = "build for ONNX Runtime instead (--target cpu or onnxruntime:cpu-fp32)"


def reason(exc: BaseException) -> str:
    """The informative line of an OpenVINO error (its first line is a source location)."""
    lines = [line.strip(" -") for line in str(exc).splitlines() if line.strip()]
    summary = next((ln for ln in lines if ln.startswith("Conversion is failed for")), None)
    if summary is not None:
        # A frontend report: which operators failed (summary) and the first operator's message.
        noise = ("Check", "While validating", "FrontEnd API", "Exception from", "Summary", "[ONNX")
        details = [
            ln
            for ln in lines
            if ln != summary and not ln.startswith(noise) and not ln.endswith(("message:", "log:"))
        ]
        return summary + (f" ({details[0]})" if details else "")
    for line in lines:
        if "operations:" in line or "not supported" in line.lower():
            return line
    # A plugin's error: source locations, then "[CPU] MaxPool node with name 'x' Check '...'
    # failed at ...", then what is wrong ("Kernel ... larger than the data shape ...").
    plugin_noise = ("Exception from", "Check '", "While validating")
    meaningful = [line for line in lines if not line.startswith(plugin_noise)]
    if meaningful and " Check '" in meaningful[0]:
        where = meaningful[0].split(" Check '", 1)[0]
        detail = next((ln for ln in meaningful[1:] if " Check '" not in ln), None)
        return f"{where}: {detail}" if detail else where
    return (meaningful or lines or [type(exc).__name__])[0]


def compile_error(exc: BaseException, inputs: Sequence[TensorSpec]) -> TargetError:
    """What to tell a user whose model the CPU plugin cannot compile (``exc``): the op and what
    is wrong; where the plugin wants a static rank or shape, the ``--shape`` that fixes the
    dynamic ``inputs`` (the sizes synthetic checks use); else ONNX Runtime.
    """
    detail = reason(exc).removeprefix("Unexpected: ")
    message = f"openvino's CPU plugin cannot compile the model: {detail}"
    dynamic = [spec for spec in inputs if spec.is_dynamic]
    if not _DYNAMIC.search(detail):
        return TargetError(f"{message}; {_ORT_ADVICE}")
    if not dynamic:
        return TargetError(
            f"{message}; fix the model's dynamic input dimensions with --shape NAME=DxDxD and "
            f"rebuild, or {_ORT_ADVICE}"
        )
    shapes = synthetic_shapes(dynamic)
    listed = ", ".join(f"{spec.name} {spec.shape_text()}" for spec in dynamic)
    fixes = " ".join(f"--shape {n}={'x'.join(map(str, dims))}" for n, dims in shapes.items())
    return TargetError(
        f"{message}; input(s) {listed} have dynamic dimensions the plugin cannot compile this "
        f"op with: rebuild with the sizes the model will run on fixed, e.g. {fixes}, or "
        f"{_ORT_ADVICE}"
    )


def check_inputs(converted: Any, model: onnx.ModelProto) -> None:
    """Refuse a conversion whose inputs are not the model's.

    OpenVINO's ONNX frontend renames or drops inputs of some graphs (sequence operators): the
    IR would then fail at run time, or compute something else.
    """
    weights = {i.name for i in model.graph.initializer}
    expected = [v.name for v in model.graph.input if v.name not in weights]
    ports = [set(port.get_names()) for port in converted.inputs]
    if len(ports) != len(expected) or any(not any(n in p for p in ports) for n in expected):
        seen = ", ".join(sorted(next(iter(sorted(p)), "?") for p in ports))
        raise TargetError(
            f"openvino's ONNX frontend changed the model's inputs (converted: {seen}; model: "
            f"{', '.join(expected)}), so it would not run this model faithfully; build for "
            "another engine (e.g. --target onnxruntime:cpu)"
        )


def convert(ov: Any, model: onnx.ModelProto, stem: Path) -> tuple[Any, int]:
    """OpenVINO's conversion of ``model``, and how many dynamic-squeeze Ifs were specialized.

    The model is converted as it is; only when that fails and it holds Ifs whose branches differ
    in rank (PyTorch's squeeze of a dimension of unknown size) is it converted again with those
    Ifs made Squeezes. If that fails too, the first error is the one raised.
    """
    staged = stem.with_name(stem.name + ".onnx")
    written = save_onnx(model, staged)
    try:
        return ov.convert_model(str(staged)), 0
    except Exception as exc:  # noqa: BLE001 - OpenVINO's frontend raises untyped errors
        first = exc
    finally:
        for path in written:
            path.unlink(missing_ok=True)
    special, count = squeeze_ifs_to_squeeze(model)
    if not count:
        raise first
    log.info("openvino cannot convert the model as it is; retrying with %d squeeze Ifs", count)
    written = save_onnx(special, staged)
    try:
        return ov.convert_model(str(staged)), count
    except Exception:  # noqa: BLE001 - as above; the first error says more
        raise first from None
    finally:
        for path in written:
            path.unlink(missing_ok=True)


def compiled(ov: Any, config: dict[str, Any], notes: list[str]) -> CompileResult:
    """The result of an OpenVINO compile for the CPU: ``config`` and ``notes``, logged."""
    for note in notes:
        log.info("%s", note)
    return CompileResult(
        engine_version=ov.get_version(),
        engine_config={"device": "CPU", **config},
        notes=tuple(notes),
    )


def ov_module() -> Any:
    return import_engine("openvino", "openvino", "openvino", "the openvino engine")
