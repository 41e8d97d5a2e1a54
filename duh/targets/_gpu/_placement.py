"""Q/DQ placement for TensorRT: on the inputs of weighted ops and the residual input of Add.

ONNX Runtime's quantizer puts a Q/DQ pair on every quantized tensor (output-side placement):
with symmetric activations that is Conv -> Q -> DQ -> ReLU -> Q -> DQ -> Conv. TensorRT's
explicit-quantization guide places them on the inputs of weighted layers (Conv, ConvTranspose,
MatMul, Gemm) and on the residual input of an Add only, so that it fuses Conv+ReLU and Conv+Add
and runs them in int8. ``place_for_tensorrt`` removes the other activation pairs (their
consumers then read the float tensor, which TensorRT quantizes where the next pair says);
weight pairs are left as they are. Nothing here needs TensorRT or a GPU.
"""

from __future__ import annotations

from collections import defaultdict

import onnx

__all__ = ["WEIGHTED_OPS", "misplaced_qdq", "place_for_tensorrt"]

WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})
_RESIDUAL_OPS = frozenset({"Add"})


def _constants(graph: onnx.GraphProto) -> set[str]:
    names = {init.name for init in graph.initializer}
    names.update(n.output[0] for n in graph.node if n.op_type == "Constant")
    return names


def _activation_pairs(
    graph: onnx.GraphProto,
) -> dict[str, tuple[str, onnx.NodeProto]]:
    """Each activation DQ's output -> (the float tensor its Q reads, the DQ node)."""
    constants = _constants(graph)
    producer = {out: n for n in graph.node for out in n.output}
    pairs: dict[str, tuple[str, onnx.NodeProto]] = {}
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        q = producer.get(node.input[0])
        if q is None or q.op_type != "QuantizeLinear" or q.input[0] in constants:
            continue
        pairs[node.output[0]] = (q.input[0], node)
    return pairs


def _wanted(graph: onnx.GraphProto) -> set[tuple[int, int]]:
    """(consumer index, input slot) pairs where TensorRT wants an activation Q/DQ pair."""
    pairs = _activation_pairs(graph)
    producer = {out: n for n in graph.node for out in n.output}
    keep: set[tuple[int, int]] = set()
    for idx, node in enumerate(graph.node):
        slots = [i for i, name in enumerate(node.input) if name in pairs]
        if node.op_type in WEIGHTED_OPS:
            keep.update((idx, i) for i in slots)
        elif node.op_type in _RESIDUAL_OPS and slots:
            # The input a weighted op produced is fused into that op (Conv+Add): one of them
            # goes unquantized; the other (the residual) keeps its pair.
            fused = [
                i for i in slots
                if producer.get(pairs[node.input[i]][0]) is not None
                and producer[pairs[node.input[i]][0]].op_type in WEIGHTED_OPS
            ]
            drop = fused[0] if fused and len(node.input) > 1 else None
            keep.update((idx, i) for i in slots if i != drop)
    return keep


def place_for_tensorrt(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` with TensorRT's Q/DQ placement; returns it and the inputs rewired."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    pairs = _activation_pairs(graph)
    keep = _wanted(graph)
    rewired = 0
    for idx, node in enumerate(graph.node):
        for i, name in enumerate(node.input):
            if name in pairs and (idx, i) not in keep:
                node.input[i] = pairs[name][0]
                rewired += 1
    # Drop the Q and DQ nodes nothing reads any more.
    while True:
        readers: dict[str, int] = defaultdict(int)
        for node in graph.node:
            for name in node.input:
                readers[name] += 1
        outputs = {o.name for o in graph.output}
        dead = [
            n for n in graph.node
            if n.op_type in ("QuantizeLinear", "DequantizeLinear")
            and not readers[n.output[0]] and n.output[0] not in outputs
        ]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    return out, rewired


def misplaced_qdq(model: onnx.ModelProto) -> list[str]:
    """Activation DQ outputs read where TensorRT's placement has none (e.g. a ReLU's input)."""
    graph = model.graph
    pairs = _activation_pairs(graph)
    keep = _wanted(graph)
    found = []
    for idx, node in enumerate(graph.node):
        for i, name in enumerate(node.input):
            if name in pairs and (idx, i) not in keep:
                found.append(f"{pairs[name][1].name or name} -> {node.op_type} {node.name!r}")
    return found
