"""A small model with an If whose branches differ in rank, as PyTorch exports ``x.squeeze(d)``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def rank_if_model(path: Path, else_op: str = "Identity") -> Path:
    """x[N,4,T] -> If(T == 1: Squeeze(x, -1), else: ELSE_OP(x)) -> Unsqueeze(-1) -> Conv1d.

    With Identity in the else branch this is PyTorch's ``x.squeeze(d)`` (inside silero-vad's
    branches); another op there (Relu) is not that pattern, and OpenVINO cannot convert it.
    """
    axes = numpy_helper.from_array(np.array([-1], np.int64), "axes")
    then = helper.make_graph(
        [helper.make_node("Constant", [], ["ax"], value=axes),
         helper.make_node("Squeeze", ["x", "ax"], ["sq"])],
        "then", [], [helper.make_tensor_value_info("sq", TensorProto.FLOAT, ["n", 4])],
    )  # fmt: skip
    other = helper.make_graph(
        [helper.make_node(else_op, ["x"], ["kept"])],
        "else", [], [helper.make_tensor_value_info("kept", TensorProto.FLOAT, ["n", 4, "t"])],
    )  # fmt: skip
    weight = np.random.default_rng(0).standard_normal((3, 4, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "last"], ["size"], axis=0),
        helper.make_node("Equal", ["size", "one"], ["cond"]),
        helper.make_node("If", ["cond"], ["picked"], then_branch=then, else_branch=other),
        helper.make_node("Unsqueeze", ["picked", "last"], ["back"]),
        helper.make_node("Conv", ["back", "w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "rank_if",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, "t"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, 1])],
        [
            numpy_helper.from_array(np.array(-1, np.int64), "last"),
            numpy_helper.from_array(np.array(1, np.int64), "one"),
            numpy_helper.from_array(weight, "w"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path
