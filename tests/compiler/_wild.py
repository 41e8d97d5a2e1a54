"""Small onnx.helper models, each showing one way models from the wild break a build."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def save(
    path: Path,
    nodes: Sequence[onnx.NodeProto],
    inputs: Sequence[onnx.ValueInfoProto],
    outputs: Sequence[onnx.ValueInfoProto],
    initializers: Sequence[onnx.TensorProto] = (),
    opset: int = 17,
) -> Path:
    """Check and write a one-graph model (IR 9, which every engine here reads)."""
    graph = helper.make_graph(list(nodes), path.stem, list(inputs), list(outputs), initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _weight(name: str, shape: tuple[int, ...], seed: int = 0) -> onnx.TensorProto:
    value = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return numpy_helper.from_array(value, name)


def minus_one_batch(path: Path) -> Path:
    """paddle2onnx style: x is [-1, 3, ?, ?] (dim_value -1, dim_param "?"); a conv and a pool."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, "?", "?"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 4])
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["y"]),
    ]
    return save(path, nodes, [x], [y], [_weight("w", (4, 3, 3, 3))])


def token_model(path: Path, vocab: int = 3) -> Path:
    """ids (int64) -> Cast -> Unsqueeze -> Gather on a table of ``vocab`` rows; mask multiplies."""
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 6])
    keep = helper.make_tensor_value_info("keep", TensorProto.INT32, ["batch", 6])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 6, 1, 4])
    nodes = [
        helper.make_node("Cast", ["ids"], ["ids32"], to=TensorProto.INT32),
        helper.make_node("Unsqueeze", ["ids32", "axes"], ["ids3"]),
        helper.make_node("Gather", ["table", "ids3"], ["emb"]),
        helper.make_node("Cast", ["keep"], ["keepf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["keepf", "axes2"], ["keep4"]),
        helper.make_node("Mul", ["emb", "keep4"], ["out"]),
    ]
    inits = [
        _weight("table", (vocab, 4)),
        numpy_helper.from_array(np.array([2], np.int64), "axes"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "axes2"),
    ]
    return save(path, nodes, [ids, keep], [out], inits)


def graph_net_model(path: Path) -> Path:
    """A message-passing step: x[edge_index[0]] scatter-added into rows edge_index[1] of a
    [num_nodes, 4] buffer; edge_index indexes a table of dynamic size (PyTorch Geometric)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["num_nodes", 4])
    edges = helper.make_tensor_value_info("edge_index", TensorProto.INT64, [2, "num_edges"])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["num_nodes", 4])
    nodes = [
        helper.make_node("Gather", ["edge_index", "zero"], ["src"], axis=0),
        helper.make_node("Gather", ["edge_index", "one"], ["dst"], axis=0),
        helper.make_node("Gather", ["x", "src"], ["msg"], axis=0),
        helper.make_node("Unsqueeze", ["dst", "axes"], ["dst2"]),
        helper.make_node("Shape", ["msg"], ["msg_shape"]),
        helper.make_node("Expand", ["dst2", "msg_shape"], ["dst_rows"]),
        helper.make_node("Mul", ["x", "nought"], ["empty"]),
        helper.make_node(
            "ScatterElements", ["empty", "dst_rows", "msg"], ["out"], axis=0, reduction="add"
        ),
    ]
    inits = [
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array(1, np.int64), "one"),
        numpy_helper.from_array(np.array([1], np.int64), "axes"),
        numpy_helper.from_array(np.array(0.0, np.float32), "nought"),
    ]
    return save(path, nodes, [x, edges], [out], inits, opset=18)


def float_ids_model(path: Path) -> Path:
    """Keras through tf2onnx: ids held as floats, cast to int32, through an arithmetic select
    (idx < 0 ? idx + N : idx) the walk cannot follow, into an Embedding table of 12 rows."""
    ids = helper.make_tensor_value_info("ids", TensorProto.FLOAT, ["batch", 6])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 6, 4])
    nodes = [
        helper.make_node("Cast", ["ids"], ["i"], to=TensorProto.INT32),
        helper.make_node("Less", ["i", "zero"], ["neg"]),
        helper.make_node("Cast", ["neg"], ["negi"], to=TensorProto.INT32),
        helper.make_node("Not", ["neg"], ["pos"]),
        helper.make_node("Cast", ["pos"], ["posi"], to=TensorProto.INT32),
        helper.make_node("Add", ["i", "rows"], ["wrapped"]),
        helper.make_node("Mul", ["negi", "wrapped"], ["a"]),
        helper.make_node("Mul", ["i", "posi"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["idx"]),
        helper.make_node("Gather", ["table", "idx"], ["out"]),
    ]
    inits = [
        _weight("table", (12, 4)),
        numpy_helper.from_array(np.array(0, np.int32), "zero"),
        numpy_helper.from_array(np.array(12, np.int32), "rows"),
    ]
    return save(path, nodes, [ids], [out], inits)


def reflect_pad_model(path: Path) -> Path:
    """An audio front end (silero VAD): a reflect pad of 96 samples on [batch, samples]; fewer
    samples than the pad cannot run, and 32 (the first synthetic size) is fewer."""
    x = helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["batch", "samples"])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "padded"])
    nodes = [helper.make_node("Pad", ["audio", "pads"], ["out"], mode="reflect")]
    pads = numpy_helper.from_array(np.array([0, 96, 0, 96], np.int64), "pads")
    return save(path, nodes, [x], [out], [pads])


def shifted_index_model(path: Path) -> Path:
    """idx + 5 indexes a table of 8 rows: what the walk cannot see through (Add), random breaks."""
    idx = helper.make_tensor_value_info("idx", TensorProto.INT64, [1, 4])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 2])
    nodes = [
        helper.make_node("Add", ["idx", "five"], ["shifted"]),
        helper.make_node("Gather", ["table", "shifted"], ["out"]),
    ]
    inits = [_weight("table", (8, 2)), numpy_helper.from_array(np.array(5, np.int64), "five")]
    return save(path, nodes, [idx], [out], inits)


def sample_rate_model(path: Path) -> Path:
    """A scalar ``sr`` (rank 0) picks an If branch; the other branch cannot run (bad reshape)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "n"])
    sr = helper.make_tensor_value_info("sr", TensorProto.INT64, [])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None])
    then_out = helper.make_tensor_value_info("t", TensorProto.FLOAT, [None, None])
    else_out = helper.make_tensor_value_info("e", TensorProto.FLOAT, [None, None])
    then_branch = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["t"])], "then", [], [then_out]
    )
    # The bad shape ([7, n] for 1 x n values) comes from x's dynamic shape: it fails at run time.
    seven = numpy_helper.from_array(np.array([7, 1], np.int64), "seven")
    else_branch = helper.make_graph(
        [
            helper.make_node("Shape", ["x"], ["x_shape"]),
            helper.make_node("Mul", ["x_shape", "seven"], ["bad_shape"]),
            helper.make_node("Reshape", ["x", "bad_shape"], ["e"]),
        ],
        "else", [], [else_out], [seven],
    )  # fmt: skip
    nodes = [
        helper.make_node("Equal", ["sr", "rate"], ["is16k"]),
        helper.make_node("If", ["is16k"], ["y"], then_branch=then_branch, else_branch=else_branch),
    ]
    rate = numpy_helper.from_array(np.array(16000, np.int64), "rate")
    return save(path, nodes, [x, sr], [y], [rate])


def quantized_model(path: Path) -> Path:
    """An already-quantized (QDQ) MatMul, as ORT's quantizer writes it."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5])
    weight = np.random.default_rng(0).integers(-100, 100, (8, 5)).astype(np.int8)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"]),
        helper.make_node("MatMul", ["xd", "wd"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(0.02, np.float32), "xs"),
        numpy_helper.from_array(np.array(0, np.int8), "xz"),
        numpy_helper.from_array(weight, "wq"),
        numpy_helper.from_array(np.array(0.01, np.float32), "ws"),
        numpy_helper.from_array(np.array(0, np.int8), "wz"),
    ]
    return save(path, nodes, [x], [y], inits)
