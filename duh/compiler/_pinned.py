"""Dynamic input dimensions that the model's weights fix: a Conv's channels, a MatMul's width.

Some exporters declare every dimension of an input dynamic (``[N, C, H, W]``, or ``-1`` and
``?`` everywhere), although a weight allows one size only: the image channels a Conv kernel was
trained on, the features a MatMul or an LSTM multiplies. Left dynamic, such a size must be
guessed for synthetic inputs (and every guess fails), OpenVINO and TVM lose a static channel
count, and a request of another size fails deep in an engine. Ingest writes the size the weight
fixes into the input's declaration, following the input only through operators that keep its
axes (casts, elementwise math with a constant, transposes), so nothing is fixed that the model
could take at another size.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import onnx

__all__ = ["PinnedDim", "pin_weight_dims"]

# Operators whose output has their first input's shape, axis for axis.
_SAME_SHAPE = frozenset({
    "Abs", "Cast", "Ceil", "Clip", "Elu", "Erf", "Exp", "Floor", "HardSigmoid", "HardSwish",
    "Identity", "LeakyRelu", "Log", "Neg", "Reciprocal", "Relu", "Round", "Selu", "Sigmoid",
    "Sign", "Softplus", "Softsign", "Sqrt", "Tanh",
})  # fmt: skip
# Elementwise with a second operand: the output keeps the input's shape when that operand is a
# constant that broadcasts into it without widening any axis (``_broadcasts_into``).
_BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "PRelu"})


@dataclass(frozen=True, slots=True)
class PinnedDim:
    """Input ``name``'s dynamic axis ``axis``, fixed at ``size`` by ``op`` ``node``'s weight."""

    name: str
    axis: int
    size: int
    op: str
    node: str

    def describe(self) -> str:
        return (
            f"input {self.name} axis {self.axis} is declared dynamic, but the weight of "
            f"{self.op} {self.node!r} allows only {self.size}: it is fixed at {self.size}"
        )


def pin_weight_dims(model: onnx.ModelProto) -> list[PinnedDim]:
    """Fix, in ``model``'s input declarations, each dynamic size a weight allows only one value of.

    Returns what was fixed. A size two weights fix differently is left dynamic (the model
    cannot run at all; its reference run says so).
    """
    graph = model.graph
    weights = _weights(graph)
    inputs = {
        v.name: v for v in graph.input
        if v.name not in weights and v.type.HasField("tensor_type")
        and v.type.tensor_type.HasField("shape")
    }  # fmt: skip
    if not inputs:
        return []
    # value name -> (graph input, rank, axis of the input each of the value's axes is)
    views: dict[str, tuple[str, list[int]]] = {
        name: (name, list(range(len(v.type.tensor_type.shape.dim)))) for name, v in inputs.items()
    }
    found: dict[tuple[str, int], set[int]] = {}
    where: dict[tuple[str, int], tuple[str, str]] = {}
    for node in graph.node:  # topological order: a view is known before its consumers
        view = next(((i, views[name]) for i, name in enumerate(node.input) if name in views), None)
        if view is None:
            continue
        position, (source, axes) = view
        if position == 0:
            for out in _view_outputs(node, axes, weights):
                views[out[0]] = (source, out[1])
        for axis, size in _pins(node, position, len(axes), weights):
            if 0 <= axis < len(axes) and size > 0:
                key = (source, axes[axis])
                found.setdefault(key, set()).add(size)
                where.setdefault(key, (node.op_type, node.name or node.output[0]))
    pinned = []
    for (name, axis), sizes in sorted(found.items()):
        dim = inputs[name].type.tensor_type.shape.dim[axis]
        if len(sizes) != 1 or dim.HasField("dim_value"):
            continue
        [size] = sizes
        dim.Clear()
        dim.dim_value = size
        pinned.append(PinnedDim(name, axis, size, *where[(name, axis)]))
    return pinned


def _weights(graph: onnx.GraphProto) -> dict[str, tuple[int, ...]]:
    """Shapes of the graph's initializers and Constant outputs."""
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    constants = (n for n in graph.node if n.op_type == "Constant" and n.domain in ("", "ai.onnx"))
    for node in constants:
        tensor = onnx.AttributeProto.TENSOR
        value = next((a.t for a in node.attribute if a.name == "value" and a.type == tensor), None)
        if value is not None:
            shapes[node.output[0]] = tuple(value.dims)
    return shapes


def _attr(node: onnx.NodeProto, name: str, default: object) -> object:
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def _view_outputs(
    node: onnx.NodeProto, axes: list[int], weights: Mapping[str, tuple[int, ...]]
) -> Iterator[tuple[str, list[int]]]:
    """The outputs of ``node`` (fed the view as its first input) that keep its axes."""
    if node.domain not in ("", "ai.onnx") or not node.output:
        return
    op = node.op_type
    if op in _SAME_SHAPE:
        yield node.output[0], axes
    elif op in _BINARY and len(node.input) == 2:
        other = weights.get(node.input[1])
        if other is not None and _broadcasts_into(other, len(axes)):
            yield node.output[0], axes
    elif op == "Transpose":
        given = _attr(node, "perm", None)
        perm = [int(p) for p in given] if isinstance(given, list) else list(range(len(axes)))[::-1]
        if sorted(perm) == list(range(len(axes))):
            yield node.output[0], [axes[p] for p in perm]


def _broadcasts_into(shape: tuple[int, ...], rank: int) -> bool:
    """Whether a constant of ``shape`` leaves every axis of a rank-``rank`` operand as it is.

    Its rank must be no larger and its sizes 1: a size > 1 would widen an axis of size 1, so the
    output would no longer be the input's view.
    """
    return len(shape) <= rank and all(s == 1 for s in shape)


def _pins(
    node: onnx.NodeProto, position: int, rank: int, weights: Mapping[str, tuple[int, ...]]
) -> Iterator[tuple[int, int]]:
    """(axis, size) of each axis of ``node``'s input ``position`` (of ``rank``) its weight fixes."""
    if node.domain not in ("", "ai.onnx") or position != 0 or len(node.input) < 2:
        return
    op = node.op_type
    weight = weights.get(node.input[1])
    if weight is None:
        return
    if op == "Conv" and len(weight) == rank >= 3:
        yield 1, weight[1] * int(_attr(node, "group", 1))  # type: ignore[call-overload]
    elif op == "ConvTranspose" and len(weight) == rank >= 3:
        yield 1, weight[0]
    elif op == "MatMul" and len(weight) == 2 and rank >= 2:
        yield rank - 1, weight[0]
    elif op == "Gemm" and len(weight) == 2 and rank == 2 and not _attr(node, "transA", 0):
        yield 1, weight[1] if _attr(node, "transB", 0) else weight[0]
    elif op in ("LSTM", "GRU", "RNN") and len(weight) == 3 and rank == 3:
        yield 2, weight[2]
    elif op == "BatchNormalization" and len(weight) == 1 and rank >= 2:
        yield 1, weight[0]
    elif op == "InstanceNormalization" and len(weight) == 1 and rank >= 3:
        yield 1, weight[0]
    elif op == "LayerNormalization":
        axis = int(_attr(node, "axis", -1))  # type: ignore[call-overload]
        first = axis if axis >= 0 else rank + axis
        if len(weight) == rank - first:
            for i, size in enumerate(weight):
                if size > 1:
                    yield first + i, size
