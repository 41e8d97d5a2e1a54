"""A float16 graph computed in float32: what INT8 quantization starts from.

ONNX Runtime's and NNCF's quantizers calibrate and quantize float32 tensors only, so an fp16
export (``model_fp16.onnx``) would have nothing to quantize. Here every float16 weight,
constant, cast target and value type becomes float32, including those inside If/Loop/Scan
bodies; the graph's float16 inputs and outputs keep their type, behind a Cast each, so the
artifact takes and returns what the source did.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from duh.passes._graph import all_graphs, copy_model

__all__ = ["computes_in_float16", "upcast_float16"]

_HALF, _FLOAT = TensorProto.FLOAT16, TensorProto.FLOAT
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
    for value in (*model.graph.input, *model.graph.output):
        if value.type.tensor_type.elem_type == _HALF:
            return True
    sizes = {_HALF: 0, _FLOAT: 0}
    for tensor in model.graph.initializer:
        if tensor.data_type in sizes:
            sizes[tensor.data_type] += int(np.prod(tensor.dims, dtype=np.int64))
    return sizes[_HALF] > sizes[_FLOAT]


def _upcast_tensor(tensor: onnx.TensorProto) -> bool:
    if tensor.data_type != _HALF:
        return False
    if tensor.data_location == TensorProto.EXTERNAL:
        raise ValueError(f"float16 tensor {tensor.name!r} is in external data")
    array = numpy_helper.to_array(tensor).astype(np.float32)
    tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
    return True


def _upcast_type(value: onnx.ValueInfoProto) -> None:
    tensor_type = value.type.tensor_type
    if tensor_type.elem_type == _HALF:
        tensor_type.elem_type = _FLOAT


def _graph_body(graph: onnx.GraphProto, main: bool) -> int:
    """Upcast ``graph`` in place (not its main inputs/outputs); how many tensors changed."""
    changed = sum(_upcast_tensor(t) for t in graph.initializer)
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                changed += _upcast_tensor(attr.t)
            elif attr.type == onnx.AttributeProto.TENSORS:
                changed += sum(_upcast_tensor(t) for t in attr.tensors)
            elif attr.name == _DTYPE_ATTRS.get(node.op_type) and attr.i == _HALF:
                attr.i = _FLOAT
                changed += 1
    for value in graph.value_info:
        _upcast_type(value)
    if not main:
        for value in (*graph.input, *graph.output):
            _upcast_type(value)
    return changed


def upcast_float16(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """``model`` computing in float32 with its float16 inputs and outputs kept (a Cast each);
    also how many tensors and types changed."""
    out = copy_model(model)
    graph = out.graph
    changed = sum(_graph_body(g, g is graph) for g in list(all_graphs(graph)))
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
        if value.type.tensor_type.elem_type != _HALF:
            continue
        inner = fresh(value.name)
        for g in all_graphs(graph):
            for node in g.node:
                node.input[:] = [inner if n == value.name else n for n in node.input]
        head.append(onnx.helper.make_node("Cast", [value.name], [inner], to=_FLOAT))
        changed += 1
    tail: list[onnx.NodeProto] = []
    for value in graph.output:
        if value.type.tensor_type.elem_type != _HALF:
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
        tail.append(onnx.helper.make_node("Cast", [inner], [value.name], to=_HALF))
        changed += 1
    nodes = [*head, *graph.node, *tail]
    del graph.node[:]
    graph.node.extend(nodes)
    return out, changed
