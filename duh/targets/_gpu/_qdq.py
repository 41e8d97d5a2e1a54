"""TensorRT's rules for explicitly quantized (Q/DQ) ONNX models, checked on the graph.

TensorRT 10 and 11 build INT8 engines only from models that carry QuantizeLinear /
DequantizeLinear nodes, and accept them only when:

- scales are constant, positive and finite; zero points are constant and all zero (symmetric);
- the quantized type is signed int8 (uint8 is refused; a Q without a zero point is uint8);
- per-channel scales (one per channel) quantize constant weights only, on the output-channel
  axis of the layer that consumes them (Conv: 0, ConvTranspose: 1, MatMul: last, Gemm: 0 with
  transB=1, else 1); activations are quantized per tensor;
- a DequantizeLinear reads int8 (TensorRT refuses int32 inputs, which is how ONNX Runtime's
  quantizer stores biases: ``fold_bias_dequantize`` turns those back into float biases);
- every QuantizeLinear feeds DequantizeLinear nodes (or a graph output) only.

Nothing here needs TensorRT or a GPU, so the checks run on any host.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

__all__ = ["QdqViolation", "check_qdq", "fold_bias_dequantize", "qdq_counts"]

_QDQ = ("QuantizeLinear", "DequantizeLinear")
_SIGNED_8BIT = {TensorProto.INT8}
_FP8 = {
    getattr(TensorProto, n)
    for n in ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ")
    if hasattr(TensorProto, n)
}


@dataclass(frozen=True, slots=True)
class QdqViolation:
    """One Q/DQ node that breaks a TensorRT rule."""

    node: str
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.node}: {self.detail}"


def qdq_counts(model: onnx.ModelProto) -> dict[str, int]:
    """How many QuantizeLinear and DequantizeLinear nodes the main graph holds."""
    counts = {op: 0 for op in _QDQ}
    for node in model.graph.node:
        if node.op_type in counts:
            counts[node.op_type] += 1
    return counts


class _Graph:
    """Constants, producers and consumers of a graph, for looking around a node."""

    def __init__(self, model: onnx.ModelProto) -> None:
        graph = model.graph
        self.constants: dict[str, np.ndarray] = {
            init.name: numpy_helper.to_array(init) for init in graph.initializer
        }
        self.types: dict[str, int] = {init.name: init.data_type for init in graph.initializer}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                tensor = node.attribute[0].t
                self.constants[node.output[0]] = numpy_helper.to_array(tensor)
                self.types[node.output[0]] = tensor.data_type
            for out in node.output:
                self.producer[out] = node
            for name in node.input:
                if name:
                    self.consumers[name].append(node)
        self.outputs = {o.name for o in graph.output}

    def is_constant(self, name: str) -> bool:
        """Whether ``name`` is a weight: an initializer, a Constant, or a Q of one."""
        if name in self.constants:
            return True
        source = self.producer.get(name)
        return source is not None and source.op_type == "QuantizeLinear" and (
            source.input[0] in self.constants
        )

    def weight(self, name: str) -> np.ndarray | None:
        """The constant behind ``name``: itself, or a QuantizeLinear's float input (QAT models)."""
        if name in self.constants:
            return self.constants[name]
        source = self.producer.get(name)
        if source is not None and source.op_type == "QuantizeLinear":
            return self.constants.get(source.input[0])
        return None


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return default


def _channel_axis(consumer: onnx.NodeProto, slot: int, rank: int) -> int | None:
    """The output-channel axis of ``consumer``'s weight input ``slot`` (None: not a weight)."""
    if consumer.op_type == "Conv" and slot == 1:
        return 0
    if consumer.op_type == "ConvTranspose" and slot == 1:
        return 1
    if consumer.op_type == "MatMul" and slot == 1:
        return rank - 1
    if consumer.op_type == "Gemm" and slot == 1:
        return 0 if _attr(consumer, "transB", 0) else 1
    return None


def _check_node(node: onnx.NodeProto, g: _Graph, name: str) -> list[QdqViolation]:
    found: list[QdqViolation] = []
    scale_name = node.input[1] if len(node.input) > 1 else ""
    scale = g.constants.get(scale_name)
    if scale is None:
        return [QdqViolation(name, "constant-scale", f"scale {scale_name!r} is not a constant")]
    if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
        found.append(QdqViolation(name, "positive-scale", "scale has values <= 0 or not finite"))
    zero_name = node.input[2] if len(node.input) > 2 and node.input[2] else ""
    if node.op_type == "QuantizeLinear":
        if zero_name:
            qtype = g.types.get(zero_name)
        else:
            qtype = _attr(node, "output_dtype", 0) or TensorProto.UINT8
    else:
        qtype = g.types.get(node.input[0]) if node.input[0] in g.types else None
        if qtype is None and zero_name:
            qtype = g.types.get(zero_name)
    if zero_name:
        zero = g.constants.get(zero_name)
        if zero is None:
            found.append(QdqViolation(name, "constant-zero-point", "zero point is not a constant"))
        elif np.any(zero.astype(np.float64) != 0):
            found.append(
                QdqViolation(name, "symmetric", "zero point is not 0 (TensorRT is symmetric only)")
            )
    if qtype == TensorProto.INT32:
        found.append(
            QdqViolation(
                name,
                "int8-only",
                "dequantizes int32 (a quantized bias); TensorRT keeps biases in float",
            )
        )
    elif qtype is not None and qtype not in _SIGNED_8BIT | _FP8:
        type_name = TensorProto.DataType.Name(qtype).lower()
        found.append(
            QdqViolation(
                name,
                "int8-only",
                f"quantizes to {type_name}; TensorRT takes signed int8 (symmetric activations)",
            )
        )
    if scale.size > 1:
        found.extend(_check_per_channel(node, g, name, scale))
    if node.op_type == "QuantizeLinear":
        readers = g.consumers.get(node.output[0], [])
        bad = [r for r in readers if r.op_type != "DequantizeLinear"]
        if bad:
            found.append(
                QdqViolation(
                    name,
                    "q-then-dq",
                    f"feeds {bad[0].op_type} {bad[0].name!r} directly; a QuantizeLinear must "
                    "feed DequantizeLinear nodes",
                )
            )
    return found


def _check_per_channel(
    node: onnx.NodeProto, g: _Graph, name: str, scale: np.ndarray
) -> list[QdqViolation]:
    data = node.input[0]
    if not g.is_constant(data):
        return [
            QdqViolation(
                name, "per-tensor-activations", "quantizes an activation per channel; TensorRT "
                "quantizes activations per tensor"
            )
        ]
    if node.op_type == "QuantizeLinear":
        return []  # its DequantizeLinear is checked against the consumer
    weight = g.weight(data)  # float weight -> Q -> DQ: the rank is that of Q's input
    rank = weight.ndim if weight is not None else 0
    axis = _attr(node, "axis", 1)
    axis = axis + rank if axis < 0 and rank else axis
    found: list[QdqViolation] = []
    if weight is not None and (axis >= rank or weight.shape[axis] != scale.size):
        found.append(
            QdqViolation(name, "per-channel-size", f"{scale.size} scales do not match axis {axis}")
        )
    for consumer in g.consumers.get(node.output[0], []):
        slot = list(consumer.input).index(node.output[0])
        want = _channel_axis(consumer, slot, rank)
        if want is None:
            found.append(
                QdqViolation(
                    name,
                    "per-channel-weights",
                    f"per-channel scales feed {consumer.op_type} input {slot}, which is not a "
                    "layer weight",
                )
            )
        elif want != axis:
            found.append(
                QdqViolation(
                    name,
                    "channel-axis",
                    f"per-channel axis {axis}, but {consumer.op_type} {consumer.name!r} has its "
                    f"output channels on axis {want}",
                )
            )
    return found


def check_qdq(model: onnx.ModelProto) -> list[QdqViolation]:
    """Every way the model's Q/DQ nodes break TensorRT's rules (empty when it can build)."""
    g = _Graph(model)
    found: list[QdqViolation] = []
    for index, node in enumerate(model.graph.node):
        if node.op_type in _QDQ and node.domain in ("", "ai.onnx"):
            found.extend(_check_node(node, g, node.name or f"{node.op_type}#{index}"))
    return found


def fold_bias_dequantize(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Replace DequantizeLinear of constant int32 tensors (quantized biases) by float constants.

    The float values are exactly what the DequantizeLinear computes, so the model's numbers do not
    change. Returns the new model and how many nodes were folded.
    """
    g = _Graph(model)
    folded: set[int] = set()
    new_inits: list[TensorProto] = []
    for index, node in enumerate(model.graph.node):
        if node.op_type != "DequantizeLinear" or g.types.get(node.input[0]) != TensorProto.INT32:
            continue
        data = g.constants.get(node.input[0])
        scale = g.constants.get(node.input[1])
        if data is None or scale is None:
            continue
        zero = g.constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        values = data.astype(np.int64) - (0 if zero is None else zero.astype(np.int64))
        if scale.size > 1:
            axis = _attr(node, "axis", 1)
            shape = [1] * data.ndim
            shape[axis] = scale.size
            scale = scale.reshape(shape)
        floats = (values.astype(np.float64) * scale.astype(np.float64)).astype(scale.dtype)
        new_inits.append(numpy_helper.from_array(floats, node.output[0]))
        folded.add(index)
    if not folded:
        return model, 0
    out = onnx.ModelProto()
    out.CopyFrom(model)
    keep = [n for i, n in enumerate(model.graph.node) if i not in folded]
    del out.graph.node[:]
    out.graph.node.extend(keep)
    out.graph.initializer.extend(new_inits)
    used = {name for n in keep for name in n.input}
    used |= {o.name for o in out.graph.output} | {i.name for i in out.graph.input}
    inits = [i for i in out.graph.initializer if i.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(inits)
    return out, len(folded)
