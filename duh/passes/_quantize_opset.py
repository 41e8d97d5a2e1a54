"""An opset Q/DQ pairs can live in: QuantizeLinear exists from opset 10, its channel axis from 13.

An older model is converted with onnx's converter, and the conversion is kept only where the
converted model computes what the source does on a calibration sample: the converter can
"succeed" and change a model's results (it bumps a Scan-8 to opset 17 unchanged).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import onnx

from duh.errors import PassError
from duh.passes._base import one_line, tool_errors
from duh.passes._graph import convert_opset, copy_model, default_opset

__all__ = ["disagreement", "qdq_opset"]

log = logging.getLogger(__name__)

_PER_CHANNEL_OPSET = 13
_QDQ_OPSET = 10


def disagreement(
    source: onnx.ModelProto, other: onnx.ModelProto, feed: Mapping[str, np.ndarray]
) -> str | None:
    """Why ``other`` does not compute what ``source`` does on ``feed`` (ONNX Runtime), or None."""
    import onnxruntime as ort

    outputs = []
    try:
        for model in (source, other):
            session = ort.InferenceSession(
                model.SerializeToString(), providers=["CPUExecutionProvider"]
            )
            wanted = {i.name for i in session.get_inputs()}
            outputs.append(session.run(None, {k: v for k, v in feed.items() if k in wanted}))
    except tool_errors() as exc:
        return f"could not be compared on onnxruntime ({one_line(exc)})"
    for name, want, got in zip(
        (o.name for o in source.graph.output), outputs[0], outputs[1], strict=True
    ):
        want, got = np.asarray(want), np.asarray(got)
        if want.shape != got.shape:
            return f"changes output {name!r} from shape {list(want.shape)} to {list(got.shape)}"
        if want.dtype.kind in "fc":
            scale = max(1.0, float(np.abs(want).max(initial=0.0)))
            same = np.allclose(got, want, rtol=1e-4, atol=1e-5 * scale, equal_nan=True)
        else:
            same = np.array_equal(got, want)
        if not same:
            return f"changes the values of output {name!r}"
    return None


def qdq_opset(
    model: onnx.ModelProto, per_channel: bool, feed: Mapping[str, np.ndarray]
) -> tuple[onnx.ModelProto, bool, list[str]]:
    """``model`` at an opset its Q/DQ pairs exist in, whether weights go per channel, and notes.

    Below 13 the model is converted (checked on ``feed``); where that fails, weights go per
    tensor from opset 10, and below 10 the model is refused with the reason.
    """
    opset = default_opset(model)
    if opset >= _PER_CHANNEL_OPSET or (opset >= _QDQ_OPSET and not per_channel):
        return copy_model(model), per_channel, []
    converted = convert_opset(model, _PER_CHANNEL_OPSET)
    if isinstance(converted, str):
        reason = f"onnx's conversion to 13 failed ({converted})"
    else:
        differs = disagreement(model, converted, feed)
        if differs is None:
            what = " (per-channel Q/DQ)" if per_channel else " (Q/DQ)"
            return converted, per_channel, [f"opset {opset} -> {_PER_CHANNEL_OPSET}{what}"]
        reason = f"the conversion to 13 {differs}"
    if opset >= _QDQ_OPSET:
        note = f"per-tensor weights: opset {opset} has no per-channel Q/DQ, and {reason}"
        log.warning("%s", note)
        return copy_model(model), False, [note]
    raise PassError(
        f"static INT8 needs opset {_QDQ_OPSET} or more (QuantizeLinear); this model has opset "
        f"{opset}, and {reason}; convert it yourself "
        "(onnx.version_converter) and check it, or use quantize mode=dynamic"
    )
