"""Small graph helpers shared by passes."""

from __future__ import annotations

import collections
import hashlib
import logging
from collections.abc import Iterator

import onnx

__all__ = [
    "all_graphs",
    "consumers",
    "convert_opset",
    "copy_model",
    "default_opset",
    "graph_fingerprint",
    "infer_shapes",
    "initializer_map",
    "missing_ops",
    "name_nodes",
    "node_count",
    "op_histogram",
    "outer_reads",
    "producers",
    "used_names",
]

log = logging.getLogger(__name__)

# Protobuf cannot serialize a message past 2 GiB, which onnx's shape inference needs to do.
_PROTO_LIMIT = 2**31 - 1


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


def _subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            yield a.g
        elif a.type == onnx.AttributeProto.GRAPHS:
            yield from a.graphs


def all_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every If/Loop/Scan body in it, nested ones included."""
    yield graph
    for node in graph.node:
        for sub in _subgraphs(node):
            yield from all_graphs(sub)


def outer_reads(node: onnx.NodeProto) -> set[str]:
    """Names the subgraphs of ``node`` (If/Loop/Scan bodies, nested too) read from outside."""
    reads: set[str] = set()
    for graph in _subgraphs(node):
        local = {i.name for i in (*graph.input, *graph.initializer)}
        local |= {o for n in graph.node for o in n.output}
        for inner in graph.node:
            reads |= {n for n in inner.input if n and n not in local}
            reads |= outer_reads(inner) - local
        reads |= {o.name for o in graph.output if o.name not in local}
    return reads


def consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    """For each tensor name, the main-graph nodes that read it (a subgraph's reads count for
    the node that holds it)."""
    out: dict[str, list[onnx.NodeProto]] = collections.defaultdict(list)
    for node in model.graph.node:
        for name in dict.fromkeys([*node.input, *sorted(outer_reads(node))]):
            if name:
                out[name].append(node)
    return out


def used_names(model: onnx.ModelProto) -> set[str]:
    """Tensor names the main graph needs: node inputs, subgraphs' outer reads, graph outputs."""
    used = {o.name for o in model.graph.output}
    for node in model.graph.node:
        used.update(node.input)
        used |= outer_reads(node)
    return used


def producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    """For each tensor name, the main-graph node that writes it."""
    return {name: node for node in model.graph.node for name in node.output if name}


def name_nodes(model: onnx.ModelProto, prefix: str = "node") -> int:
    """Give every unnamed main-graph node, and every repeat of a name (some exporters write
    them), a unique name; return how many were named."""
    taken = {n.name for n in model.graph.node if n.name}
    seen: set[str] = set()
    named = 0
    for i, node in enumerate(model.graph.node):
        if node.name and node.name not in seen:
            seen.add(node.name)
            continue
        candidate = f"{prefix}_{node.op_type}_{i}"
        while candidate in taken:
            candidate += "_"
        node.name = candidate
        taken.add(candidate)
        seen.add(candidate)
        named += 1
    return named


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A deep copy (passes never edit their input in place)."""
    copied = onnx.ModelProto()
    copied.CopyFrom(model)
    return copied


def default_opset(model: onnx.ModelProto) -> int:
    """The model's opset of the default ONNX domain (0 when it imports none)."""
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def missing_ops(model: onnx.ModelProto) -> list[str]:
    """Default-domain op types in the main graph that the model's opset does not define."""
    opset = default_opset(model)
    missing = []
    for op in sorted({n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx")}):
        try:
            onnx.defs.get_schema(op, opset, "")
        except onnx.defs.SchemaError:
            missing.append(op)
    return missing


def infer_shapes(model: onnx.ModelProto, data_prop: bool = False) -> onnx.ModelProto:
    """``model`` with onnx's inferred shapes, or ``model`` itself where inference cannot run
    (a model past 2 GiB, or one onnx's inference rejects: exporters write some of those)."""
    if model.ByteSize() >= _PROTO_LIMIT:
        return model
    try:
        return onnx.shape_inference.infer_shapes(model, data_prop=data_prop)
    except (onnx.shape_inference.InferenceError, RuntimeError, ValueError) as exc:
        log.debug("shape inference failed, going on without it: %s", exc)
        return model


def convert_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto | str:
    """``model`` converted to default-domain ``opset`` and checked, or why it could not be."""
    try:
        converted = onnx.version_converter.convert_version(model, opset)
        onnx.checker.check_model(converted)
    except (
        onnx.version_converter.ConvertError,
        onnx.checker.ValidationError,
        RuntimeError,
        ValueError,
    ) as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if missing_ops(converted):
        return f"the converted model still has ops opset {opset} lacks: {missing_ops(converted)}"
    return converted
