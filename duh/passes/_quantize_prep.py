"""Graph forms ONNX Runtime's quantizer mishandles, made plain before it runs.

A bias is quantized to int32 with the scale ``input_scale * weight_scale`` of the node that adds
it, so each node needs its own copy; the quantizer names that copy after the bias alone, and two
Convs sharing one bias initializer (tf2onnx writes that) got two int32 tensors of one name: a
graph out of SSA form, refused by OpenVINO and loaded wrongly by ONNX Runtime.
"""

from __future__ import annotations

import onnx

__all__ = ["exact_comparison_feeders", "unshare_biases"]

# Ops whose input 2 is a bias the quantizer turns into int32.
_BIASED = frozenset({"Conv", "ConvTranspose", "Gemm"})


def unshare_biases(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """``model`` with each bias initializer used by one node; returns it and the copies made."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            if name in inits:
                uses[name] = uses.get(name, 0) + 1
    shared = {n.input[2] for n in graph.node if n.op_type in _BIASED and len(n.input) > 2} & {
        name for name, count in uses.items() if count > 1
    }
    if not shared:
        return model, 0
    out = onnx.ModelProto()
    out.CopyFrom(model)
    taken = {i.name for i in out.graph.initializer} | {
        v for n in out.graph.node for v in (*n.input, *n.output)
    }
    seen: set[str] = set()
    copies = 0
    for node in out.graph.node:
        if node.op_type not in _BIASED or len(node.input) < 3 or node.input[2] not in shared:
            continue
        name = node.input[2]
        if name not in seen:
            seen.add(name)  # the first user keeps the original
            continue
        index = 1
        while f"{name}__{index}" in taken:
            index += 1
        copy = onnx.TensorProto()
        copy.CopyFrom(inits[name])
        copy.name = f"{name}__{index}"
        taken.add(copy.name)
        out.graph.initializer.append(copy)
        node.input[2] = copy.name
        copies += 1
    return out, copies


# Ops that hand their input's values on unchanged (reshaped, cast, moved).
_SAME_VALUES = frozenset(
    {"Cast", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Flatten", "Identity", "Expand"}
)


def exact_comparison_feeders(model: onnx.ModelProto) -> set[str]:
    """Nodes whose output an ``Equal`` tests exactly (through value-preserving ops): INT8's
    rounding there turns every "equal" false. Lowered tree ensembles count the turns along
    each leaf's path with a MatMul and test the count with Equal; quantized, no leaf is hit."""
    made = {out: node for node in model.graph.node for out in node.output}
    feeders: set[str] = set()
    for node in model.graph.node:
        if node.op_type != "Equal":
            continue
        todo = list(node.input)
        while todo:
            producer = made.get(todo.pop())
            if producer is None or not producer.name or producer.name in feeders:
                continue
            if producer.op_type in _SAME_VALUES:
                todo.append(producer.input[0])
            else:
                feeders.add(producer.name)
    return feeders
