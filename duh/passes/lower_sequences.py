"""``lower-sequences``: sequences of same-shape tensors as one stacked tensor, for engines whose
ONNX import cannot take positions from the inputs (OpenVINO folds or drops them).

A sequence of n tensors that agree past their first axis becomes their concatenation on axis 0
plus an int64 offsets tensor [n + 1]; its length is known when the graph is built, positions
stay run-time values: ``SequenceConstruct`` is a Concat, ``SequenceInsert``/``SequenceErase``
Slice and Concat data and offsets at the (normalized) position, ``SequenceAt`` a Slice between
two offsets, ``SequenceLength`` a constant. The graph is lowered only when every sequence op
in it is one of these and every element's shape is fixed (rank >= 1).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import onnx
from onnx import helper, numpy_helper

from duh.passes._base import PassBase, PassContext, PassResult, register_pass

__all__ = ["LowerSequences"]

_OPS = {
    "SequenceEmpty",
    "SequenceConstruct",
    "SequenceInsert",
    "SequenceErase",
    "SequenceAt",
    "SequenceLength",
}


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...] | None]:
    out: dict[str, tuple[int, ...] | None] = {}
    for v in (*model.graph.input, *model.graph.value_info, *model.graph.output):
        if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape"):
            dims = v.type.tensor_type.shape.dim
            out[v.name] = (
                tuple(int(d.dim_value) for d in dims)
                if all(d.HasField("dim_value") for d in dims)
                else None
            )
    return out


class _Lowering:
    """Each sequence value: ``data`` (its elements concatenated on axis 0) and ``offsets`` (an
    int64 [n + 1] tensor where element k spans data[offsets[k]:offsets[k + 1]])."""

    def __init__(self, shapes: dict[str, tuple[int, ...] | None]) -> None:
        self.shapes = shapes
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.length: dict[str, int] = {}  # sequence value -> its (static) length
        self.rest: dict[str, tuple[int, ...] | None] = {}  # element dims after the first
        self.offsets: dict[str, str] = {}
        self._n = itertools.count()

    def _name(self, hint: str) -> str:
        return f"seq_lowered/{hint}_{next(self._n)}"

    def const(self, value: np.ndarray) -> str:
        name = self._name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs: Any) -> str:
        out = out or self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def _i64(self, *values: int) -> str:
        return self.const(np.array(values, np.int64))

    def _position(self, pos: str, n: int) -> str:
        """A scalar position as a [1] int64 tensor in [0, n] (negative counts from the end)."""
        p = self.op("Cast", [pos], to=onnx.TensorProto.INT64)
        p = self.op("Reshape", [p, self._i64(1)])
        negative = self.op("Less", [p, self._i64(0)])
        return self.op("Where", [negative, self.op("Add", [p, self._i64(n)]), p])

    def _slice(self, x: str, start: str, end: str) -> str:
        return self.op("Slice", [x, start, end, self._i64(0)])

    def _at(self, offsets: str, p: str) -> str:
        return self.op("Gather", [offsets, p], axis=0)

    def _element(self, x: str) -> tuple[int, ...] | None:
        shape = self.shapes.get(x)
        return shape if shape is not None and len(shape) >= 1 else None

    def _made(self, out: str, n: int, rest: tuple[int, ...] | None, offsets: str) -> bool:
        self.length[out], self.rest[out], self.offsets[out] = n, rest, offsets
        return True

    def lower(self, node: onnx.NodeProto) -> bool:
        """Emit the tensor form of ``node``; False when it is not one this pass lowers."""
        kind, ins, out = node.op_type, list(node.input), node.output[0]
        end = self._i64(2**62)
        if kind == "SequenceEmpty":
            return self._made(out, 0, None, self._i64(0))
        if kind == "SequenceConstruct":
            shapes = [self._element(x) for x in ins]
            if any(s is None for s in shapes) or len({s[1:] for s in shapes if s}) != 1:
                return False
            sizes = np.cumsum([0, *(s[0] for s in shapes if s)]).astype(np.int64)
            self.op("Concat", ins, out, axis=0)
            return self._made(
                out, len(ins), shapes[0][1:] if shapes[0] else None, self.const(sizes)
            )
        if not ins or ins[0] not in self.length:
            return False
        seq, n, offsets = ins[0], self.length[ins[0]], self.offsets[ins[0]]
        if kind == "SequenceLength":
            self.op("Identity", [self.const(np.array(n, np.int64))], out)
            return True
        if kind == "SequenceAt":
            if n == 0:
                return False
            p = self._position(ins[1], n)
            one = self.op("Add", [p, self._i64(1)])
            self.op("Slice", [seq, self._at(offsets, p), self._at(offsets, one), self._i64(0)], out)
            return True
        if kind == "SequenceInsert":
            shape = self._element(ins[1])
            rest = self.rest[seq]
            if shape is None or (n and rest != shape[1:]):
                return False
            if n == 0:
                self.op("Identity", [ins[1]], out)
                return self._made(out, 1, shape[1:], self._i64(0, shape[0]))
            p = self._position(ins[2], n) if len(ins) > 2 and ins[2] else self._i64(n)
            cut = self._at(offsets, p)
            self.op("Concat", [self._slice(seq, self._i64(0), cut), ins[1],
                               self._slice(seq, cut, end)], out, axis=0)  # fmt: skip
            one = self.op("Add", [p, self._i64(1)])
            moved = self.op("Add", [self._slice(offsets, p, end), self._i64(shape[0])])
            merged = self.op("Concat", [self._slice(offsets, self._i64(0), one), moved], axis=0)
            return self._made(out, n + 1, rest, merged)
        if kind == "SequenceErase" and n > 0:
            pos = ins[1] if len(ins) > 1 and ins[1] else self.const(np.array(-1, np.int64))
            p = self._position(pos, n)
            one = self.op("Add", [p, self._i64(1)])
            a, b = self._at(offsets, p), self._at(offsets, one)
            self.op("Concat", [self._slice(seq, self._i64(0), a), self._slice(seq, b, end)], out,
                    axis=0)  # fmt: skip
            width = self.op("Sub", [b, a])
            moved = self.op("Sub", [self._slice(offsets, one, end), width])
            merged = self.op("Concat", [self._slice(offsets, self._i64(0), p), moved], axis=0)
            return self._made(out, n - 1, self.rest[seq], merged)
        return False


@register_pass("lower-sequences")
@dataclass(frozen=True, slots=True)
class LowerSequences(PassBase):
    """Rewrite sequences of tensors as concatenated data + offsets (positions stay inputs)."""

    lossy: ClassVar[bool] = False

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        """Lower the graph's sequence ops when it can lower all of them; else leave it."""
        graph = model.graph
        kinds = {n.op_type for n in graph.node if n.op_type.startswith("Sequence") or
                 n.op_type in ("SplitToSequence", "ConcatFromSequence")}  # fmt: skip
        if not kinds or not kinds <= _OPS:
            return PassResult(model, False)
        if any(not o.type.HasField("tensor_type") for o in graph.output):
            return PassResult(model, False)
        lowering = _Lowering(_shapes(model))
        for node in graph.node:
            if node.op_type in _OPS and not lowering.lower(node):
                return PassResult(model, False, (f"{node.op_type} {node.name!r} left as it is",))
        out = onnx.ModelProto()
        out.CopyFrom(model)
        del out.graph.node[:]
        out.graph.node.extend([n for n in graph.node if n.op_type not in _OPS])
        out.graph.node.extend(lowering.nodes)
        out.graph.initializer.extend(lowering.inits)
        kept = [v for v in out.graph.value_info if v.name not in lowering.length]
        del out.graph.value_info[:]
        out.graph.value_info.extend(kept)
        _toposort(out.graph)
        return PassResult(out, True, (f"sequence ops ({', '.join(sorted(kinds))}) as tensors",))


def _toposort(graph: onnx.GraphProto) -> None:
    """Reorder ``graph``'s nodes so that each reads only values made before it."""
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, order = list(graph.node), []
    while pending:
        later = []
        for n in pending:
            if all(x in ready for x in n.input):
                order.append(n)
                ready.update(n.output)
            else:
                later.append(n)
        if len(later) == len(pending):
            order.extend(later)  # a cycle or an unknown value: the checker says which
            break
        pending = later
    copies = [onnx.NodeProto() for _ in order]
    for copy, n in zip(copies, order, strict=True):
        copy.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)
