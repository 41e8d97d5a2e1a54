"""ONNX rewrites that let OpenVINO's frontend convert graphs whose ranks depend on sizes.

PyTorch exports ``x.squeeze(d)`` on a dimension of unknown size as
``If(size(x, d) == 1, then: Squeeze(x, d), else: Identity(x))``: the If's output rank depends
on a size known only at run time. OpenVINO's frontend then gives that value an unknown rank,
and the convolutions or reductions after it refuse to convert ("The input data tensor's rank
has to be known"). Where the graph's consumers take the squeezed rank (an LSTM after it, a
convolution of fixed rank), the ``Identity`` branch cannot run anyway; replacing the If with its
``Squeeze`` makes the rank static. Squeeze fails at run time on a size other than 1, so this
never computes something else silently, and duh's verification checks the result against the
unchanged source on the check inputs.

ONNX Runtime takes any one-element tensor as an If's condition (PyTorch exports ``if p >= 0.5``
on a [1, 1] probability as an If of a [1, 1] condition), but OpenVINO's frontend refuses a
condition of rank above 1 ("Rank of If condition input must be equal to 0 or 1").
``Reshape(cond, [])`` makes it the scalar the ONNX spec asks for; Reshape fails on a condition
of more than one element, as ONNX Runtime's If does, so it computes nothing else.

A graph output that is a graph input (a state passed through) or a weight (a constant output)
is one tensor with two roles, and OpenVINO's frontend then makes a second input of it ("x" and
"x_1"). Such an output is given to the frontend as an Identity of a fresh name, which the
artifact records (``engine_config.output_ports``): an IR read back renames a port that repeats
an input's name, so the engine looks such outputs up by the fresh name.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

__all__ = ["distinct_outputs", "scalar_if_conditions", "squeeze_ifs_to_squeeze"]


def _squeeze_branch(node: onnx.NodeProto) -> list[onnx.NodeProto] | None:
    """The then-branch nodes (Constants and one Squeeze) of a dynamic-squeeze If, or None."""
    if node.op_type != "If" or node.domain not in ("", "ai.onnx") or len(node.output) != 1:
        return None
    branches = {a.name: a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH}
    then, other = branches.get("then_branch"), branches.get("else_branch")
    if then is None or other is None or len(other.node) != 1:
        return None
    work = [n for n in then.node if n.op_type != "Constant"]
    identity = other.node[0]
    if len(work) != 1 or work[0].op_type != "Squeeze" or identity.op_type != "Identity":
        return None
    squeeze = work[0]
    if squeeze.input[0] != identity.input[0] or [o.name for o in then.output] != [
        squeeze.output[0]
    ]:
        return None
    return list(then.node)


def _rewrite(graph: onnx.GraphProto, prefix: str) -> int:
    count = 0
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                count += _rewrite(attr.g, prefix)
        body = _squeeze_branch(node)
        if body is None:
            nodes.append(node)
            continue
        for inner in body:
            copy = onnx.NodeProto()
            copy.CopyFrom(inner)
            if inner.op_type == "Squeeze":
                del copy.output[:]
                copy.output.append(node.output[0])
            copy.name = f"{prefix}{node.name}/{inner.name or inner.op_type}"
            nodes.append(copy)
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return count


def squeeze_ifs_to_squeeze(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` with each dynamic-squeeze If (in every subgraph) made a Squeeze.

    Returns the copy and how many Ifs were replaced (0: the copy equals the model).
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out, _rewrite(out.graph, "")


def _graphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    """``graph`` and every subgraph in it, outermost first."""
    found = [graph]
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                found.extend(_graphs(attr.g))
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    found.extend(_graphs(sub))
    return found


def _ranks(graph: onnx.GraphProto) -> dict[str, int]:
    """The rank of each value of ``graph`` whose type declares a shape."""
    ranks = {t.name: len(t.dims) for t in graph.initializer}
    for info in (*graph.input, *graph.value_info, *graph.output):
        tensor = info.type.tensor_type
        if info.type.HasField("tensor_type") and tensor.HasField("shape"):
            ranks[info.name] = len(tensor.shape.dim)
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    ranks[node.output[0]] = len(attr.t.dims)
    return ranks


def _inferred(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with ONNX's shape inference (subgraphs included); as it is where that fails
    (a model past protobuf's 2 GiB, an op inference rejects): its declared types remain."""
    try:
        return onnx.shape_inference.infer_shapes(model)
    except (onnx.shape_inference.InferenceError, ValueError):
        return model


def _unique(taken: set[str], base: str) -> str:
    name, index = base, 0
    while name in taken:
        index += 1
        name = f"{base}_{index}"
    taken.add(name)
    return name


def _scalar_conditions(
    graph: onnx.GraphProto,
    known: list[dict[str, int]],
    outer: dict[str, int],
    taken: set[str],
) -> int:
    """Reshape to a scalar each If condition of ``graph`` (and its subgraphs) whose rank is
    above 1 or unknown; ``known`` holds the inferred ranks of each graph, in ``_graphs`` order."""
    ranks = {**outer, **known.pop(0)}
    count = 0
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                count += _scalar_conditions(attr.g, known, ranks, taken)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    count += _scalar_conditions(sub, known, ranks, taken)
        is_if = node.op_type == "If" and node.domain in ("", "ai.onnx") and node.input
        if is_if and ranks.get(node.input[0], -1) not in (0, 1):
            where = node.name or node.output[0]
            shape, scalar = _unique(taken, f"{where}/scalar_shape"), _unique(taken, f"{where}/cond")
            empty = helper.make_tensor(shape, TensorProto.INT64, [0], [])
            nodes.append(helper.make_node("Constant", [], [shape], name=shape, value=empty))
            nodes.append(helper.make_node("Reshape", [node.input[0], shape], [scalar], name=scalar))
            node.input[0] = scalar
            count += 1
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return count


def scalar_if_conditions(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` whose If conditions (in every subgraph) of rank above 1, or of a
    rank neither declared nor inferred, are ``Reshape(cond, [])``: ``If(c[1,1])`` becomes
    ``If(Reshape(c, []))``.

    Returns the copy and how many conditions were reshaped (0: the copy equals the model).
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if not any(n.op_type == "If" for g in _graphs(out.graph) for n in g.node):
        return out, 0
    # The inferred model has the same graphs in the same order: only value_info differs.
    known = [_ranks(g) for g in _graphs(_inferred(out).graph)]
    taken = {
        name
        for g in _graphs(out.graph)
        for name in (
            *(v.name for v in (*g.input, *g.output, *g.initializer)),
            *(o for n in g.node for o in (*n.output, n.name)),
        )
    }
    return out, _scalar_conditions(out.graph, known, {}, taken)


def distinct_outputs(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, str]]:
    """``model`` with each graph output that is a graph input or an initializer made the output
    of an Identity of a fresh name; also {output name: fresh name} (empty: ``model`` itself)."""
    graph = model.graph
    shared = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    if not any(v.name in shared for v in graph.output):
        return model, {}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    taken = shared | {o for n in out.graph.node for o in (*n.output, n.name)}
    taken |= {v.name for v in out.graph.output}
    renamed: dict[str, str] = {}
    for value in out.graph.output:
        if value.name in shared:
            fresh = _unique(taken, f"{value.name}/output")
            out.graph.node.append(helper.make_node("Identity", [value.name], [fresh], name=fresh))
            renamed[value.name] = fresh
            value.name = fresh
    return out, renamed
