"""Graph forms ONNX Runtime's quantizer mishandles, made plain before it runs.

A bias is quantized to int32 with the scale ``input_scale * weight_scale`` of the node that adds
it, so each node needs its own copy; the quantizer names that copy after the bias alone, and two
Convs sharing one bias initializer (tf2onnx writes that) got two int32 tensors of one name: a
graph out of SSA form, refused by OpenVINO and loaded wrongly by ONNX Runtime.
"""

from __future__ import annotations

import onnx

__all__ = ["unshare_biases"]

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
