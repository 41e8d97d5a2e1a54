"""``fold-constants``: Constant nodes become initializers, constant subgraphs become values.

Models exported from Paddle keep every weight in a Constant node, and most exporters leave
shape arithmetic (Shape -> Gather -> Concat -> Reshape) that is constant once the input shapes
are. Both get folded here: nodes whose inputs are all constant are evaluated with ONNX's reference
evaluator, and Shape/Size of tensors with a static shape are replaced by their values.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import onnx
from onnx import numpy_helper

from duh.passes._base import PassBase, PassContext, PassResult, register_pass, tool_errors
from duh.passes._graph import copy_model, graph_fingerprint, infer_shapes, used_names

__all__ = ["FoldConstants", "constants_to_initializers"]

log = logging.getLogger(__name__)

# Folding these would undo quantization or change results between runs.
_NEVER_FOLD = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "RandomNormal",
        "RandomNormalLike",
        "RandomUniform",
        "RandomUniformLike",
        "Multinomial",
        "Bernoulli",
        "Dropout",
    }
)


def _attribute_tensor(node: onnx.NodeProto) -> np.ndarray | None:
    """The value of a Constant node as an array (None for sparse or string-less forms it lacks)."""
    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name == "value_float":
            return np.array(attr.f, dtype=np.float32)
        if attr.name == "value_floats":
            return np.array(list(attr.floats), dtype=np.float32)
        if attr.name == "value_int":
            return np.array(attr.i, dtype=np.int64)
        if attr.name == "value_ints":
            return np.array(list(attr.ints), dtype=np.int64)
        if attr.name == "value_string":
            return np.array(attr.s.decode(), dtype=object)
        if attr.name == "value_strings":
            return np.array([s.decode() for s in attr.strings], dtype=object)
    return None


def constants_to_initializers(model: onnx.ModelProto) -> int:
    """Turn the main graph's Constant nodes into initializers, in place; return how many."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    moved = 0
    for node in list(graph.node):
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
            continue
        if node.output[0] in outputs:
            continue
        if any(a.name == "value" for a in node.attribute):
            tensor = onnx.TensorProto()
            tensor.CopyFrom(next(a.t for a in node.attribute if a.name == "value"))
            tensor.name = node.output[0]
        else:
            value = _attribute_tensor(node)
            if value is None:
                continue
            tensor = numpy_helper.from_array(value, node.output[0])
        graph.initializer.append(tensor)
        graph.node.remove(node)
        moved += 1
    return moved


def _static_shape(model: onnx.ModelProto) -> dict[str, list[int]]:
    shapes = {}
    for value in (*model.graph.input, *model.graph.value_info, *model.graph.output):
        dims = value.type.tensor_type.shape.dim if value.type.HasField("tensor_type") else []
        # paddle2onnx writes dim_value -1 for a dynamic size: only positive sizes are known.
        if value.type.tensor_type.HasField("shape") and all(
            d.HasField("dim_value") and d.dim_value > 0 for d in dims
        ):
            shapes[value.name] = [int(d.dim_value) for d in dims]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _shape_value(node: onnx.NodeProto, shape: list[int]) -> np.ndarray:
    if node.op_type == "Size":
        return np.array(int(np.prod(shape)), dtype=np.int64)
    attrs = {a.name: a.i for a in node.attribute}
    start, end = attrs.get("start", 0), attrs.get("end", len(shape))
    return np.array(shape[slice(start, end)], dtype=np.int64)


def _evaluate(
    node: onnx.NodeProto, values: dict[str, np.ndarray], opsets: list[onnx.OperatorSetIdProto]
) -> list[np.ndarray] | None:
    from onnx.reference import ReferenceEvaluator

    # A node whose value would not fit in memory stays a node too.
    failures: tuple[type[BaseException], ...] = (MemoryError, *tool_errors())
    try:
        inputs = [
            onnx.helper.make_tensor_value_info(
                n, onnx.helper.np_dtype_to_tensor_dtype(values[n].dtype), None
            )
            for n in dict.fromkeys(node.input)
            if n
        ]
        outputs = [
            onnx.helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None)
            for n in node.output
            if n
        ]
        graph = onnx.helper.make_graph([node], "fold", inputs, outputs)
        model = onnx.helper.make_model(graph, opset_imports=opsets)
        results = ReferenceEvaluator(model).run(
            None, {n: values[n] for n in dict.fromkeys(node.input) if n}
        )
    # The reference evaluator raises what its op implementation raises (NotImplementedError,
    # TypeError, ValueError, ...), and a dtype onnx has no tensor type for raises KeyError: a
    # node that cannot be evaluated simply stays in the graph.
    except failures as exc:
        log.debug("fold-constants: cannot evaluate %s %r: %s", node.op_type, node.name, exc)
        return None
    return [np.asarray(r) for r in results]


def _fold_once(model: onnx.ModelProto, fold_shapes: bool, max_elements: int) -> int:
    graph = model.graph
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    shapes = _static_shape(model) if fold_shapes else {}
    keep = {o.name for o in graph.output}
    folded = 0
    for node in list(graph.node):
        if node.domain not in ("", "ai.onnx") or node.op_type in _NEVER_FOLD:
            continue
        if any(
            a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
            for a in node.attribute
        ):
            continue
        if any(o in keep for o in node.output):
            continue
        results: list[np.ndarray] | None
        if (
            node.op_type in ("Shape", "Size")
            and node.input[0] in shapes
            and node.input[0] not in values
        ):
            results = [_shape_value(node, shapes[node.input[0]])]
        elif all(not n or n in values for n in node.input) and node.input:
            results = _evaluate(node, values, list(model.opset_import))
        else:
            continue
        if results is None or any(r.size > max_elements or r.dtype == object for r in results):
            continue
        # A fold that grows the model (Expand, Tile, a Cast of fp16 weights back to fp32) costs
        # bytes and undoes compression; the engine computes such nodes once at load anyway.
        given = sum(values[n].nbytes for n in set(node.input) if n in values)
        if sum(r.nbytes for r in results) > max(1 << 16, given * 3 // 2):
            continue
        for name, value in zip(node.output, results, strict=False):
            if name:
                values[name] = value
                graph.initializer.append(numpy_helper.from_array(value, name))
        graph.node.remove(node)
        folded += 1
    return folded


def _drop_unused(model: onnx.ModelProto) -> None:
    used = used_names(model) | {i.name for i in model.graph.input}
    for init in list(model.graph.initializer):
        if init.name not in used:
            model.graph.initializer.remove(init)


@register_pass("fold-constants")
@dataclass(frozen=True, slots=True)
class FoldConstants(PassBase):
    """Constant nodes -> initializers; evaluate constant subgraphs and static Shape/Size."""

    lossy: ClassVar[bool] = False

    fold_shapes: bool = field(
        default=True, metadata={"help": "replace Shape/Size of statically shaped tensors by values"}
    )
    max_elements: int = field(
        default=1 << 24, metadata={"help": "do not fold a result larger than this (elements)"}
    )
    max_rounds: int = field(default=8, metadata={"help": "fold/infer rounds before stopping"})

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        """Fold until nothing changes (shape inference between rounds)."""
        before = graph_fingerprint(model)
        out = copy_model(model)
        moved = constants_to_initializers(out)
        folded = 0
        for _ in range(self.max_rounds):
            out = infer_shapes(out, data_prop=True)
            done = _fold_once(out, self.fold_shapes, self.max_elements)
            folded += done
            if not done:
                break
        _drop_unused(out)
        notes = []
        if moved:
            notes.append(f"{moved} Constant nodes -> initializers")
        if folded:
            notes.append(f"{folded} constant nodes folded")
        return PassResult(out, graph_fingerprint(out) != before, tuple(notes))
