"""Small graph helpers shared by passes."""

from __future__ import annotations

import collections
import hashlib

import onnx

__all__ = [
    "consumers",
    "copy_model",
    "graph_fingerprint",
    "initializer_map",
    "name_nodes",
    "node_count",
    "op_histogram",
    "producers",
]


def node_count(model: onnx.ModelProto) -> int:
    """Nodes in the main graph."""
    return len(model.graph.node)


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    """How many nodes of each op type the main graph holds, most common first."""
    counts = collections.Counter(n.op_type for n in model.graph.node)
    return dict(counts.most_common())


def graph_fingerprint(model: onnx.ModelProto) -> str:
    """A hash of the graph's structure and weights, to tell whether a pass changed anything."""
    digest = hashlib.sha256()
    for node in model.graph.node:
        digest.update(node.SerializeToString(deterministic=True))
    for init in model.graph.initializer:
        digest.update(init.name.encode())
        digest.update(init.raw_data or init.SerializeToString(deterministic=True))
    for io in (*model.graph.input, *model.graph.output):
        digest.update(io.SerializeToString(deterministic=True))
    return digest.hexdigest()


def initializer_map(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    """Initializers of the main graph by name."""
    return {init.name: init for init in model.graph.initializer}


def consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    """For each tensor name, the main-graph nodes that read it."""
    out: dict[str, list[onnx.NodeProto]] = collections.defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            if name:
                out[name].append(node)
    return out


def producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    """For each tensor name, the main-graph node that writes it."""
    return {name: node for node in model.graph.node for name in node.output if name}


def name_nodes(model: onnx.ModelProto, prefix: str = "node") -> int:
    """Give every unnamed main-graph node a unique name; return how many were named."""
    taken = {n.name for n in model.graph.node if n.name}
    named = 0
    for i, node in enumerate(model.graph.node):
        if node.name:
            continue
        candidate = f"{prefix}_{node.op_type}_{i}"
        while candidate in taken:
            candidate += "_"
        node.name = candidate
        taken.add(candidate)
        named += 1
    return named


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A deep copy (passes never edit their input in place)."""
    copied = onnx.ModelProto()
    copied.CopyFrom(model)
    return copied
