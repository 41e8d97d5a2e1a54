"""Integer weights ONNX Runtime multiplies exactly on every x86 CPU.

ONNX Runtime's u8 x s8 kernels on x86 CPUs without VNNI (AVX2, AVX-512 without VNNI) add
products in pairs into int16 (``vpmaddubsw``), which saturates once a weight leaves 7 bits:
a MatMulInteger over 256 full-range weights can be off by 10^5. Its u8 x u8 kernels widen to
int16 first and are exact. ``(w - zp) == ((w + 128) - (zp + 128))``, so an int8 weight moved to
uint8 with its zero point moved alike means the same and runs exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = ["exact_int8_weights", "saturating_weights"]

# (weight input, its zero point input) of the ops whose int8 weight feeds an integer kernel.
_WEIGHT_INPUTS = {
    ("", "MatMulInteger"): (1, 3),
    ("", "ConvInteger"): (1, 3),
    ("", "QLinearMatMul"): (3, 5),
    ("", "QLinearConv"): (3, 5),
    ("", "DequantizeLinear"): (0, 2),
    ("com.microsoft", "DynamicQuantizeMatMul"): (1, 3),
    ("com.microsoft", "MatMulIntegerToFloat"): (1, 5),
    ("com.microsoft", "QGemm"): (3, 5),
}
# The widest int8 weight the pairwise int16 sum holds: 2 * 255 * 64 <= 32767.
_SAFE_LOW, _SAFE_HIGH = -64, 63


@dataclass(frozen=True, slots=True)
class _Use:
    node: onnx.NodeProto
    weight: int
    zero_point: int


def saturating_weights(model: onnx.ModelProto) -> int:
    """How many int8 weights of ``model``'s integer ops leave 7 bits (ORT saturates on them
    without VNNI)."""
    weights = _constants(model.graph)
    return sum(1 for name, _uses in _weight_uses(model.graph, weights) if _wide(weights[name]))


def exact_int8_weights(model: onnx.ModelProto, only_wide: bool = False) -> int:
    """Move ``model``'s int8 weights of integer ops (and their zero points) to uint8, in place.

    Only weights that are initializers, whose every use is such an op's weight input with a
    constant (or absent) zero point, are moved. ``only_wide``: only those that leave 7 bits.
    Returns how many weights moved.
    """
    graph = model.graph
    constants = _constants(graph)
    used = _names_used(graph)
    moved = 0
    for name, uses in _weight_uses(graph, constants):
        if only_wide and not _wide(constants[name]):
            continue
        zero_points = [_zero_point(u, constants) for u in uses]
        if any(zp is None for zp in zero_points):
            continue  # a zero point computed at run time cannot move with the weight
        new_weight = _fresh(name, used)
        graph.initializer.append(numpy_helper.from_array(_shifted(constants[name]), new_weight))
        new_zero_points: dict[str, str] = {}  # one moved zero point per one read
        for use, zp in zip(uses, zero_points, strict=True):
            assert zp is not None
            inputs = use.node.input
            old = inputs[use.zero_point] if use.zero_point < len(inputs) else ""
            if old not in new_zero_points:
                new_zero_points[old] = _fresh(old or f"{name}_zero_point", used)
                graph.initializer.append(
                    numpy_helper.from_array(_shifted(zp), new_zero_points[old])
                )
            while len(inputs) <= use.zero_point:
                inputs.append("")
            inputs[use.weight] = new_weight
            inputs[use.zero_point] = new_zero_points[old]
        moved += 1
    if moved:
        _drop_unused(graph)
    return moved


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """The graph's int8 initializers (weights and zero points), but those a graph input of the
    same name may override at run time."""
    inputs = {i.name for i in graph.input}
    return {
        init.name: numpy_helper.to_array(init)
        for init in graph.initializer
        if init.data_type == onnx.TensorProto.INT8 and init.name not in inputs
    }


def _weight_uses(
    graph: onnx.GraphProto, constants: dict[str, np.ndarray]
) -> Iterator[tuple[str, list[_Use]]]:
    """Each int8 initializer whose every use is an integer op's weight input, with its uses."""
    uses: dict[str, list[_Use]] = {}
    other: set[str] = set(o.name for o in graph.output)
    for node in graph.node:
        slots = _WEIGHT_INPUTS.get((node.domain if node.domain != "ai.onnx" else "", node.op_type))
        for i, name in enumerate(node.input):
            if slots is not None and i == slots[0]:
                uses.setdefault(name, []).append(_Use(node, *slots))
            else:
                other.add(name)
        for attr in node.attribute:  # a subgraph reading the weight keeps it as it is
            if attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                other.update(_names_used_in(attr))
    for name, found in uses.items():
        value = constants.get(name)
        if value is not None and value.dtype == np.int8 and name not in other:
            yield name, found


def _zero_point(use: _Use, constants: dict[str, np.ndarray]) -> np.ndarray | None:
    """The int8 zero point of ``use`` (0 where the input is absent), or None if not constant."""
    inputs = use.node.input
    if use.zero_point >= len(inputs) or not inputs[use.zero_point]:
        return np.zeros((), np.int8)
    value = constants.get(inputs[use.zero_point])
    return value if value is not None and value.dtype == np.int8 else None


def _wide(weight: np.ndarray) -> bool:
    return bool(weight.size) and (int(weight.min()) < _SAFE_LOW or int(weight.max()) > _SAFE_HIGH)


def _shifted(values: np.ndarray) -> np.ndarray:
    return (values.astype(np.int16) + 128).astype(np.uint8)


def _names_used(graph: onnx.GraphProto) -> set[str]:
    names = {i.name for i in graph.initializer} | {i.name for i in graph.input}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    return names


def _names_used_in(attr: onnx.AttributeProto) -> set[str]:
    graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
    names: set[str] = set()
    for sub in graphs:
        for node in sub.node:
            names.update(node.input)
            for inner in node.attribute:
                if inner.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                    names.update(_names_used_in(inner))
    return names


def _fresh(base: str, used: set[str]) -> str:
    name, n = f"{base}_u8", 1
    while name in used:
        n += 1
        name = f"{base}_u8_{n}"
    used.add(name)
    return name


def _drop_unused(graph: onnx.GraphProto) -> None:
    """Remove initializers nothing reads any more (the int8 weights and zero points moved)."""
    read = {o.name for o in graph.output}
    for node in graph.node:
        read.update(node.input)
        for attr in node.attribute:
            if attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                read.update(_names_used_in(attr))
    kept = [i for i in graph.initializer if i.name in read]
    if len(kept) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(kept)
