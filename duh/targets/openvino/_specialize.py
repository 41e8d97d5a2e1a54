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
"""

from __future__ import annotations

import onnx

__all__ = ["squeeze_ifs_to_squeeze"]


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
