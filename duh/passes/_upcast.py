"""A float16 or float64 graph computed in float32: what INT8 quantization starts from.

ONNX Runtime's and NNCF's quantizers calibrate and quantize float32 tensors only, so an fp16
export (``model_fp16.onnx``) or a float64 one (skl2onnx's ``DoubleTensorType``) would have
nothing to quantize. Here every such weight, constant, cast target and value type becomes
float32, including those inside If/Loop/Scan bodies; the graph's inputs and outputs keep their
type, behind a Cast each, so the artifact takes and returns what the source did. (Float64 to
float32 loses precision that an INT8 build, 8 bits a weight, never had.)
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from duh.passes._graph import all_graphs, copy_model

__all__ = ["computes_in_float16", "computes_in_float64", "to_float32"]

_HALF, _FLOAT, _DOUBLE = TensorProto.FLOAT16, TensorProto.FLOAT, TensorProto.DOUBLE
# Attributes that name an element type the node creates.
_DTYPE_ATTRS = {
    "Cast": "to",
    "EyeLike": "dtype",
    "RandomNormal": "dtype",
    "RandomUniform": "dtype",
    "RandomNormalLike": "dtype",
    "RandomUniformLike": "dtype",
    "Multinomial": "dtype",
    "Bernoulli": "dtype",
}


def computes_in_float16(model: onnx.ModelProto) -> bool:
    """Whether the model computes in float16: a float16 graph input or output, or most of its
    float weights (by elements) stored as float16 (an fp16 export, mixed precision)."""
    return _computes_in(model, _HALF)


def computes_in_float64(model: onnx.ModelProto) -> bool:
    """Whether the model computes in float64 (skl2onnx's DoubleTensorType), as above."""
    return _computes_in(model, _DOUBLE)


def _computes_in(model: onnx.ModelProto, elem_type: int) -> bool:
    for value in (*model.graph.input, *model.graph.output):
        if value.type.tensor_type.elem_type == elem_type:
            return True
    sizes = {elem_type: 0, _FLOAT: 0}
    for tensor in model.graph.initializer:
        if tensor.data_type in sizes:
            sizes[tensor.data_type] += int(np.prod(tensor.dims, dtype=np.int64))
    return sizes[elem_type] > sizes[_FLOAT]


def _cast_tensor(tensor: onnx.TensorProto, source: int) -> bool:
    if tensor.data_type != source:
        return False
    if tensor.data_location == TensorProto.EXTERNAL:
        name = TensorProto.DataType.Name(source).lower()
        raise ValueError(f"{name} tensor {tensor.name!r} is in external data")
    array = numpy_helper.to_array(tensor).astype(np.float32)
    tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
    return True


def _cast_type(value: onnx.ValueInfoProto, source: int) -> None:
    tensor_type = value.type.tensor_type
    if tensor_type.elem_type == source:
        tensor_type.elem_type = _FLOAT


def _graph_body(graph: onnx.GraphProto, main: bool, source: int) -> int:
    """Cast ``graph`` in place (not its main inputs/outputs); how many tensors changed."""
    changed = sum(_cast_tensor(t, source) for t in graph.initializer)
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                changed += _cast_tensor(attr.t, source)
            elif attr.type == onnx.AttributeProto.TENSORS:
                changed += sum(_cast_tensor(t, source) for t in attr.tensors)
            elif attr.name == _DTYPE_ATTRS.get(node.op_type) and attr.i == source:
                attr.i = _FLOAT
                changed += 1
    for value in graph.value_info:
        _cast_type(value, source)
    if not main:
        for value in (*graph.input, *graph.output):
            _cast_type(value, source)
    return changed


def to_float32(model: onnx.ModelProto, source: int = _HALF) -> tuple[onnx.ModelProto, int]:
    """``model`` computing in float32 where it computed in ``source`` (float16 or float64),
    its inputs and outputs of that type kept (a Cast each); also how many tensors and types
    changed."""
    out = copy_model(model)
    graph = out.graph
    changed = sum(_graph_body(g, g is graph, source) for g in list(all_graphs(graph)))
    taken = {n for node in graph.node for n in (*node.input, *node.output)}
    taken |= {v.name for v in (*graph.input, *graph.output, *graph.initializer)}

    def fresh(base: str) -> str:
        name, i = f"{base}_fp32", 0
        while name in taken:
            i += 1
            name = f"{base}_fp32_{i}"
        taken.add(name)
        return name

    head: list[onnx.NodeProto] = []
    for value in graph.input:
        if value.type.tensor_type.elem_type != source:
            continue
        inner = fresh(value.name)
        for g in all_graphs(graph):
            for node in g.node:
                node.input[:] = [inner if n == value.name else n for n in node.input]
        head.append(onnx.helper.make_node("Cast", [value.name], [inner], to=_FLOAT))
        changed += 1
    tail: list[onnx.NodeProto] = []
    for value in graph.output:
        if value.type.tensor_type.elem_type != source:
            continue
        inner = fresh(value.name)
        for init in graph.initializer:  # a constant output
            if init.name == value.name:
                init.name = inner
        for node in graph.node:
            node.output[:] = [inner if n == value.name else n for n in node.output]
            node.input[:] = [inner if n == value.name else n for n in node.input]
        for g in list(all_graphs(graph))[1:]:
            for node in g.node:  # an If/Loop body that reads the output from outside
                node.input[:] = [inner if n == value.name else n for n in node.input]
        tail.append(onnx.helper.make_node("Cast", [inner], [value.name], to=source))
        changed += 1
    nodes = [*head, *graph.node, *tail]
    del graph.node[:]
    graph.node.extend(nodes)
    return out, changed
