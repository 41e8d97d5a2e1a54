"""``lower-sequences``: sequences of same-shape tensors as one stacked tensor, for engines whose
ONNX import cannot take positions from the inputs (OpenVINO folds or drops them).

A sequence of n tensors of shape S becomes a tensor of shape [n, *S]; its length is known when
the graph is built, the positions stay runtime values: ``SequenceConstruct`` is a Concat of the
elements, ``SequenceInsert``/``SequenceErase`` Slice and Concat at the (normalized) position,
``SequenceAt`` a Gather, ``SequenceLength`` a constant. The graph is lowered only when every
sequence op in it is one of these and every element's shape is fixed and the same.
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

_OPS = {"SequenceConstruct", "SequenceInsert", "SequenceErase", "SequenceAt", "SequenceLength"}


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
    def __init__(self, shapes: dict[str, tuple[int, ...] | None]) -> None:
        self.shapes = shapes
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.length: dict[str, int] = {}  # sequence value -> its (static) length
        self.element: dict[str, tuple[int, ...]] = {}
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

    def _element(self, name: str) -> tuple[int, ...] | None:
        return self.shapes.get(name)

    def _item(self, x: str, shape: tuple[int, ...]) -> str:
        """``x`` with a leading axis of one (Reshape: Unsqueeze changed form at opset 13)."""
        return self.op("Reshape", [x, self.const(np.array([1, *shape], np.int64))])

    def _position(self, pos: str, n: int) -> str:
        """A scalar position as a [1] int64 tensor in [0, n] (negative counts from the end)."""
        p = self.op("Cast", [pos], to=onnx.TensorProto.INT64)
        p = self.op("Reshape", [p, self.const(np.array([1], np.int64))])
        wrapped = self.op("Add", [p, self.const(np.array([n], np.int64))])
        negative = self.op("Less", [p, self.const(np.array([0], np.int64))])
        return self.op("Where", [negative, wrapped, p])

    def _split_at(self, seq: str, p: str, skip: int) -> tuple[str, str]:
        zero, end = self.const(np.array([0], np.int64)), self.const(np.array([2**62], np.int64))
        head = self.op("Slice", [seq, zero, p, zero])
        start = self.op("Add", [p, self.const(np.array([skip], np.int64))]) if skip else p
        tail = self.op("Slice", [seq, start, end, zero])
        return head, tail

    def lower(self, node: onnx.NodeProto) -> bool:
        """Emit the tensor form of ``node``; False when it is not one this pass lowers."""
        kind, ins, out = node.op_type, list(node.input), node.output[0]
        if kind == "SequenceConstruct":
            shapes = {self._element(x) for x in ins}
            shape = next(iter(shapes))
            if len(shapes) != 1 or shape is None:
                return False
            self.op("Concat", [self._item(x, shape) for x in ins], out, axis=0)
            self.length[out], self.element[out] = len(ins), shape
            return True
        if not ins or ins[0] not in self.length:
            return False
        seq, n, shape = ins[0], self.length[ins[0]], self.element[ins[0]]
        if kind == "SequenceAt":
            p = self.op("Reshape", [ins[1], self.const(np.array([], np.int64))])
            self.op("Gather", [seq, self.op("Cast", [p], to=onnx.TensorProto.INT64)], out, axis=0)
            return True
        if kind == "SequenceLength":
            self.op("Identity", [self.const(np.array(n, np.int64))], out)
            return True
        if kind == "SequenceInsert":
            if self._element(ins[1]) != shape:
                return False
            item = self._item(ins[1], shape)
            if len(ins) < 3 or not ins[2]:
                self.op("Concat", [seq, item], out, axis=0)
            else:
                head, tail = self._split_at(seq, self._position(ins[2], n), 0)
                self.op("Concat", [head, item, tail], out, axis=0)
            self.length[out], self.element[out] = n + 1, shape
            return True
        if kind == "SequenceErase" and n > 0:
            pos = ins[1] if len(ins) > 1 and ins[1] else self.const(np.array(-1, np.int64))
            head, tail = self._split_at(seq, self._position(pos, n), 1)
            self.op("Concat", [head, tail], out, axis=0)
            self.length[out], self.element[out] = n - 1, shape
            return True
        return False


@register_pass("lower-sequences")
@dataclass(frozen=True, slots=True)
class LowerSequences(PassBase):
    """Rewrite sequences of same-shape tensors as stacked tensors (positions stay inputs)."""

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
