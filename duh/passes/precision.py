"""``fp16`` / ``bf16``: run the graph in half precision, weights and compute.

Each standard-ONNX node whose type constraint allows the low type (at the model's opset) runs in
it; nodes on the block list (reductions, Softmax, Exp, Pow by default: they overflow or lose too
much) and nodes whose schema does not allow the type stay float32, with Casts at the borders.
Graph inputs and outputs stay float32 unless ``keep_io_types`` is off.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from duh.passes._base import PassBase, PassContext, PassResult, register_pass
from duh.passes._graph import (
    convert_opset,
    copy_model,
    default_opset,
    infer_shapes,
    outer_reads,
    used_names,
)

__all__ = ["DEFAULT_BLOCK_OPS", "Bf16", "Fp16", "convert_float"]

log = logging.getLogger(__name__)

DEFAULT_BLOCK_OPS = (
    "ReduceSum",
    "ReduceMean",
    "ReduceProd",
    "ReduceSumSquare",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "CumSum",
    "Softmax",
    "LogSoftmax",
    "Exp",
    "Pow",
    "Range",
    "NonMaxSuppression",
    "RoiAlign",
    "TopK",
)
_TYPE_NAME: dict[int, str] = {TensorProto.FLOAT16: "float16", TensorProto.BFLOAT16: "bfloat16"}
_FP16_MAX = float(np.finfo(np.float16).max)


def _low_tensor(array: np.ndarray, name: str, low: int) -> tuple[onnx.TensorProto, int]:
    """``array`` (float32) as a ``low`` tensor; also how many values had to be clipped."""
    clipped = 0
    if low == TensorProto.FLOAT16:
        clipped = int(np.count_nonzero(np.abs(array) > _FP16_MAX))
        return numpy_helper.from_array(
            np.clip(array, -_FP16_MAX, _FP16_MAX).astype(np.float16), name
        ), clipped
    import ml_dtypes

    bits = array.astype(ml_dtypes.bfloat16).view(np.uint16)
    tensor = onnx.helper.make_tensor(
        name, TensorProto.BFLOAT16, array.shape, bits.tobytes(), raw=True
    )
    return tensor, clipped


def _schema(node: onnx.NodeProto, opset: int) -> onnx.defs.OpSchema | None:
    if node.domain not in ("", "ai.onnx"):
        return None
    try:
        return onnx.defs.get_schema(node.op_type, opset, "")
    except onnx.defs.SchemaError:
        return None


def _formal(params: Sequence[onnx.defs.OpSchema.FormalParameter], index: int) -> str | None:
    if index < len(params):
        return str(params[index].type_str)
    if params and params[-1].option == onnx.defs.OpSchema.FormalParameterOption.Variadic:
        return str(params[-1].type_str)
    return None


@dataclass
class _Converter:
    model: onnx.ModelProto
    low: int
    keep_io_types: bool
    block_ops: frozenset[str]
    block_nodes: frozenset[str]
    dtype: dict[str, int] = field(default_factory=dict)
    casts: dict[tuple[str, int], str] = field(default_factory=dict)
    low_inits: dict[str, str] = field(default_factory=dict)
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    converted: collections.Counter[str] = field(default_factory=collections.Counter)
    kept: collections.Counter[str] = field(default_factory=collections.Counter)
    clipped: int = 0

    @property
    def suffix(self) -> str:
        return "fp16" if self.low == TensorProto.FLOAT16 else "bf16"

    def cast(self, name: str, to: int) -> str:
        key = (name, to)
        if key not in self.casts:
            out = f"{name}__to_{'fp32' if to == TensorProto.FLOAT else self.suffix}"
            self.nodes.append(onnx.helper.make_node("Cast", [name], [out], name=out, to=to))
            self.casts[key] = out
            self.dtype[out] = to
        return self.casts[key]

    def low_initializer(self, name: str, inits: dict[str, onnx.TensorProto]) -> str:
        if name not in self.low_inits:
            tensor, clipped = _low_tensor(
                numpy_helper.to_array(inits[name]), f"{name}__{self.suffix}", self.low
            )
            self.clipped += clipped
            self.model.graph.initializer.append(tensor)
            self.low_inits[name] = tensor.name
            self.dtype[tensor.name] = self.low
        return self.low_inits[name]

    def convert_attribute_tensor(self, node: onnx.NodeProto) -> bool:
        for attr in node.attribute:
            if attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
                tensor, clipped = _low_tensor(numpy_helper.to_array(attr.t), attr.t.name, self.low)
                self.clipped += clipped
                attr.t.CopyFrom(tensor)
                return True
        return False


def _types(model: onnx.ModelProto) -> dict[str, int]:
    types = {i.name: i.data_type for i in model.graph.initializer}
    for value in (*model.graph.input, *model.graph.value_info, *model.graph.output):
        if value.type.HasField("tensor_type") and value.type.tensor_type.elem_type:
            types[value.name] = value.type.tensor_type.elem_type
    return types


def _visit(
    conv: _Converter, node: onnx.NodeProto, opset: int, inits: dict[str, onnx.TensorProto]
) -> None:
    low = conv.low
    schema = _schema(node, opset)
    has_graph = any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute
    )
    allowed = (
        schema is not None
        and not has_graph
        and node.op_type not in conv.block_ops
        and node.name not in conv.block_nodes
    )
    floats = [
        n
        for n in (*node.input, *node.output)
        if n and conv.dtype.get(n) in (TensorProto.FLOAT, low)
    ]
    if allowed and node.op_type == "Cast":
        to = next(a for a in node.attribute if a.name == "to")
        if to.i == TensorProto.FLOAT:
            to.i = low
            conv.dtype[node.output[0]] = low
            conv.converted[node.op_type] += 1
        conv.nodes.append(node)
        return
    if allowed and node.op_type in ("Constant", "ConstantOfShape"):
        if conv.convert_attribute_tensor(node):
            conv.dtype[node.output[0]] = low
            conv.converted[node.op_type] += 1
        conv.nodes.append(node)
        return
    params: dict[str, bool] = {}
    if allowed and schema is not None:
        allowed_types = {
            c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints
        }
        wanted = f"tensor({_TYPE_NAME[low]})"
        bound = [(_formal(schema.inputs, i), n) for i, n in enumerate(node.input) if n]
        bound += [(_formal(schema.outputs, i), n) for i, n in enumerate(node.output) if n]
        for param, name in bound:
            if param in allowed_types and conv.dtype.get(name) in (TensorProto.FLOAT, low):
                params[param] = wanted in allowed_types[param]
        # A type parameter only in the inputs (Shape's T, BatchNormalization's mean/var) takes
        # whatever it is given: weights go low (smaller), computed tensors stay as they are.
        outputs = {_formal(schema.outputs, i) for i in range(len(node.output))}
        flexible = set()
        for p in [p for p in params if p not in outputs]:
            names = [n for param, n in bound if param == p]
            if params[p] and all(n in inits or conv.dtype.get(n) == low for n in names):
                continue
            flexible.add(p)
    else:
        flexible = set()
    if floats and not any(params.values()):
        conv.kept[node.op_type] += 1
    elif any(params.values()):
        conv.converted[node.op_type] += 1
    for i, name in enumerate(node.input):
        if not name or conv.dtype.get(name) not in (TensorProto.FLOAT, low):
            continue
        param = _formal(schema.inputs, i) if schema is not None else None
        if param in flexible:
            continue
        want_low = bool(param is not None and params.get(param, False))
        have = conv.dtype[name]
        if want_low and have == TensorProto.FLOAT:
            node.input[i] = (
                conv.low_initializer(name, inits) if name in inits else conv.cast(name, low)
            )
        elif not want_low and have == low:
            node.input[i] = conv.cast(name, TensorProto.FLOAT)
    for i, name in enumerate(node.output):
        param = _formal(schema.outputs, i) if schema is not None else None
        if (
            name
            and param is not None
            and params.get(param, False)
            and conv.dtype.get(name) == TensorProto.FLOAT
        ):
            conv.dtype[name] = low
    conv.nodes.append(node)


def _to_float(low_name: str, name: str) -> onnx.NodeProto:
    """The Cast that gives ``name`` back as float32 (a graph output, a tensor a subgraph reads).

    Named apart from ``_Converter.cast``'s ``{name}__to_fp32``, which may exist beside it."""
    return onnx.helper.make_node(
        "Cast", [low_name], [name], name=f"{name}__to_fp32_kept", to=TensorProto.FLOAT
    )


def convert_float(
    model: onnx.ModelProto,
    low: int,
    keep_io_types: bool = True,
    block_ops: tuple[str, ...] = DEFAULT_BLOCK_OPS,
    block_nodes: tuple[str, ...] = (),
) -> tuple[onnx.ModelProto, list[str]]:
    """Convert ``model`` to run in ``low`` (TensorProto.FLOAT16 or BFLOAT16); return it, notes."""
    model = infer_shapes(copy_model(model))
    opset = default_opset(model)
    conv = _Converter(model, low, keep_io_types, frozenset(block_ops), frozenset(block_nodes))
    conv.dtype = _types(model)
    inits = {i.name: i for i in model.graph.initializer if i.data_type == TensorProto.FLOAT}
    # If/Loop bodies stay float32 and read these by name: they must stay float32 under it.
    outer = set().union(*(outer_reads(n) for n in model.graph.node))
    if not keep_io_types:
        for value in model.graph.input:
            if (
                value.type.tensor_type.elem_type == TensorProto.FLOAT
                and value.name not in inits
                and value.name not in outer
            ):
                value.type.tensor_type.elem_type = low
                conv.dtype[value.name] = low
    for node in model.graph.node:
        _visit(conv, node, opset, inits)
    renamed: dict[str, str] = {}
    for value in model.graph.output:
        if conv.dtype.get(value.name) != low:
            continue
        if keep_io_types:
            renamed[value.name] = f"{value.name}__{conv.suffix}"
        else:
            value.type.tensor_type.elem_type = low
    made = {o for node in conv.nodes for o in node.output}
    read_inside = {n for n in outer if conv.dtype.get(n) == low and n in made}
    renamed |= {n: f"{n}__{conv.suffix}" for n in read_inside if n not in renamed}
    nodes: list[onnx.NodeProto] = []
    for node in conv.nodes:
        for i, name in enumerate(node.input):
            node.input[i] = renamed.get(name, name)
        nodes.append(node)
        for i, name in enumerate(node.output):
            node.output[i] = renamed.get(name, name)
            if name in read_inside:  # before the If/Loop that reads it
                nodes.append(_to_float(renamed[name], name))
    nodes += [_to_float(inner, name) for name, inner in renamed.items() if name not in read_inside]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = used_names(model)
    for init in list(model.graph.initializer):
        if init.name not in used:
            model.graph.initializer.remove(init)
    del model.graph.value_info[:]
    model = infer_shapes(model)
    casts = sum(1 for n in model.graph.node if n.op_type == "Cast" and "__to_" in n.name)
    notes = [
        f"{sum(conv.converted.values())} nodes run in {_TYPE_NAME[low]}, {casts} casts inserted"
    ]
    if conv.kept:
        notes.append(
            "kept float32: " + ", ".join(f"{op} x{n}" for op, n in conv.kept.most_common())
        )
    if conv.clipped:
        notes.append(f"{conv.clipped} weight values clipped to the float16 range")
        log.warning("%d weight values exceed the float16 range and were clipped", conv.clipped)
    return model, notes


@dataclass(frozen=True, slots=True)
class _HalfPrecision(PassBase):
    """What ``fp16`` and ``bf16`` share: everything but the type they convert to."""

    low: ClassVar[int]
    # Its loss is the one the target precision's own checks expect.
    lossy: ClassVar[bool] = False

    keep_io_types: bool = field(
        default=True, metadata={"help": "keep graph inputs/outputs float32 (--keep-io-types)"}
    )
    block_ops: tuple[str, ...] = field(
        default=DEFAULT_BLOCK_OPS, metadata={"help": "op types kept in float32"}
    )
    block_nodes: tuple[str, ...] = field(
        default=(), metadata={"help": "node names kept in float32"}
    )
    opset: int = field(default=0, metadata={"help": "convert to this opset first (0: keep)"})

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        """Convert to the low type (first to ``opset``, where onnx's converter can)."""
        notes: list[str] = []
        current = default_opset(model)
        if self.opset and current < self.opset:
            converted = convert_opset(model, self.opset)
            if isinstance(converted, str):
                log.info(
                    "opset conversion to %d failed (%s); converting at opset %d",
                    self.opset,
                    converted,
                    current,
                )
            else:
                model = converted
                notes.append(
                    f"opset {current} -> {self.opset} (its ops accept {_TYPE_NAME[self.low]})"
                )
        converted_model, more = convert_float(
            model, self.low, self.keep_io_types, self.block_ops, self.block_nodes
        )
        return PassResult(converted_model, True, (*notes, *more))


@register_pass("fp16")
@dataclass(frozen=True, slots=True)
class Fp16(_HalfPrecision):
    """Weights and compute in float16; blocked ops and graph I/O stay float32."""

    low: ClassVar[int] = TensorProto.FLOAT16


@register_pass("bf16")
@dataclass(frozen=True, slots=True)
class Bf16(_HalfPrecision):
    """Weights and compute in bfloat16; blocked ops and graph I/O stay float32."""

    low: ClassVar[int] = TensorProto.BFLOAT16

    opset: int = field(
        default=22,
        metadata={"help": "convert to this opset first: Conv, Gemm, ... take bfloat16 from 22"},
    )
