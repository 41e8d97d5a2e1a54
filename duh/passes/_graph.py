"""Small graph helpers shared by passes."""

from __future__ import annotations

import collections
import hashlib

import onnx

__all__ = ["graph_fingerprint", "node_count", "op_histogram"]


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
