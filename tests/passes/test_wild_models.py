"""Graphs the way third-party exporters write them: every pass either copes, or says why.

paddle2onnx writes -1 for a dynamic size; exporters repeat node names; If/Loop bodies read
main-graph tensors by name; old opsets lack what newer ops need. A pass that cannot process such
a model raises PassError with one line, an optional one keeps the model with a note; none lets a
KeyError, IndexError or an onnx error out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from duh.calibration import CalibrationSet, load_calibration
from duh.compiler.ingest import ingest
from duh.errors import PassError
from duh.passes import create_pass
from tests.passes._models import conv_bn_model, ctx, make_model, mlp_block_model, run_ort


def _input(model: onnx.ModelProto, dims: list[int | str]) -> None:
    shape = model.graph.input[0].type.tensor_type.shape
    shape.ClearField("dim")
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, int):
            dim.dim_value = d
        else:
            dim.dim_param = d


def test_a_minus_one_dimension_is_not_folded_as_a_size(tmp_path: Path) -> None:
    # y = x * batch, the batch read with Shape: paddle2onnx declares it -1.
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Cast", ["batch"], ["batch_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x", "batch_f"], ["y"]),
    ]
    model = make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 3])],
        [numpy_helper.from_array(np.array(0, np.int64), "zero")],
        opset=11,
    )
    x = np.ones((2, 3), np.float32)
    result = create_pass("fold-constants").run(model, ctx(tmp_path))
    assert "Shape" in [n.op_type for n in result.model.graph.node]
    np.testing.assert_array_equal(run_ort(result.model, {"x": x})[0], 2 * x)


def test_rules_and_fp16_keep_what_an_if_body_reads(tmp_path: Path) -> None:
    # The LayerNorm's x - mean is also read inside an If branch, by name.
    model = mlp_block_model(opset=17)
    branch = helper.make_graph(
        [helper.make_node("Identity", ["d"], ["branch_out"])],
        "then",
        [],
        [helper.make_tensor_value_info("branch_out", TensorProto.FLOAT, ["n", 32])],
    )
    other = helper.make_graph(
        [helper.make_node("Identity", ["h"], ["other_out"])],
        "else",
        [],
        [helper.make_tensor_value_info("other_out", TensorProto.FLOAT, ["n", 32])],
    )
    model.graph.input.append(helper.make_tensor_value_info("flag", TensorProto.BOOL, []))
    model.graph.node.append(
        helper.make_node("If", ["flag"], ["z"], then_branch=branch, else_branch=other)
    )
    model.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", 32]))
    onnx.checker.check_model(model)
    feed = {
        "x": np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32),
        "flag": np.array(True),
    }
    want = run_ort(model, feed)
    fused = create_pass("fuse").run(model, ctx(tmp_path, engine="openvino")).model
    assert "LayerNormalization" not in [n.op_type for n in fused.graph.node]
    for got, expected in zip(run_ort(fused, feed), want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # fp16 runs the main graph in float16; the If body still reads float32 `d` and `h`.
    half = create_pass("fp16").run(model, ctx(tmp_path)).model
    for got, expected in zip(run_ort(half, feed), want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=2e-2, atol=2e-2)


def test_repeated_node_names_fuse_correctly(tmp_path: Path) -> None:
    source = conv_bn_model()
    model = conv_bn_model()
    for node in model.graph.node:
        node.name = {"Conv": "conv", "BatchNormalization": "bn"}.get(node.op_type, node.name)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    result = create_pass("fuse", {"rules": ("conv-bn",)}).run(model, ctx(tmp_path))
    assert [n.op_type for n in result.model.graph.node].count("Conv") == 2
    assert "BatchNormalization" not in [n.op_type for n in result.model.graph.node]
    names = [n.name for n in result.model.graph.node]
    assert len(set(names)) == len(names)  # ONNX Runtime refuses repeated names; now it loads
    np.testing.assert_allclose(
        run_ort(result.model, {"x": x})[0], run_ort(source, {"x": x})[0], rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("opset", [10, 11, 12])
def test_per_channel_int8_below_opset_13_is_a_model_that_loads(tmp_path: Path, opset: int) -> None:
    # Q/DQ take a channel axis from opset 13: an older model is converted before quantizing.
    model = conv_bn_model()
    model.opset_import[0].version = opset
    model.ir_version = 5 if opset < 11 else 6
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    source = ingest(path)
    calibration = load_calibration(
        "synthetic", source.inputs, samples=4, shapes={"x": (1, 3, 8, 8)}
    )
    c = ctx(tmp_path, precision="int8", calibration=calibration, cache_dir=tmp_path / "cache")
    result = create_pass("quantize", {"mode": "static"}).run(source.model, c)
    assert result.notes[0] == f"opset {opset} -> 13 (per-channel Q/DQ)"
    onnx.checker.check_model(result.model, full_check=True)
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    session = ort.InferenceSession(
        result.model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    assert session.run(None, {"x": x})[0].shape == (1, 10)


def test_channel_pruning_reaches_into_a_vector_matmul_weight(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "w2")
    model = make_model(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "w2"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])],
        [w1, w2],
        opset=13,
    )
    result = create_pass("prune", {"mode": "channels", "min_elements": 1}).run(model, ctx(tmp_path))
    assert "8 output channels removed from 1 layers" in result.notes[0]
    assert {tuple(i.dims) for i in result.model.graph.initializer} == {(8, 8), (8,)}
    x = rng.standard_normal((4, 8)).astype(np.float32)
    assert run_ort(result.model, {"x": x})[0].shape == (4,)


def test_channel_pruning_keeps_layers_whose_statistics_or_bias_are_computed(
    tmp_path: Path,
) -> None:
    # Paddle keeps BatchNormalization's parameters in Constant nodes; a bias may be computed.
    model = conv_bn_model()
    graph = model.graph
    params = {"bn1_s", "bn1_b", "bn1_m", "bn1_v"}
    for init in [i for i in graph.initializer if i.name in params]:
        graph.node.insert(0, helper.make_node("Constant", [], [init.name], value=init))
        graph.initializer.remove(init)
    graph.node.insert(0, helper.make_node("Identity", ["b2_raw"], ["b2"]))
    graph.initializer.append(numpy_helper.from_array(np.zeros(32, np.float32), "b2_raw"))
    next(n for n in graph.node if n.name == "conv2").input.append("b2")
    onnx.checker.check_model(model)
    result = create_pass("prune", {"mode": "channels", "min_elements": 1}).run(model, ctx(tmp_path))
    assert result.notes[0].startswith("channels: 0 output channels removed from 0 layers")
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(
        run_ort(result.model, {"x": x})[0], run_ort(model, {"x": x})[0], rtol=1e-5, atol=1e-6
    )


def test_fp16_keeps_an_output_that_later_ops_also_read(tmp_path: Path) -> None:
    # logits are an output and the input of a (float32) Softmax: two casts back to float32.
    w = np.random.default_rng(0).standard_normal((8, 5)).astype(np.float32)
    model = make_model(
        [
            helper.make_node("MatMul", ["x", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 5]),
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["n", 5]),
        ],
        [numpy_helper.from_array(w, "w")],
    )
    x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    half = create_pass("fp16").run(model, ctx(tmp_path)).model
    for got, want in zip(run_ort(half, {"x": x}), run_ort(model, {"x": x}), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-2)


def test_cleanup_keeps_a_graph_graphsurgeon_rejects(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["h"], ["y"]), helper.make_node("Relu", ["y"], ["h"])],
        "cycle",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [7])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    result = create_pass("cleanup").run(model, ctx(tmp_path))
    assert result.model is model and not result.changed
    assert result.notes == (
        "cleanup failed, model kept as it was: OnnxGraphSurgeonException: Cycle detected in "
        "graph! Are there tensors with duplicate names in the graph?",
    )


def test_passes_take_a_model_with_dims_written_as_minus_one_and_question_marks(
    tmp_path: Path,
) -> None:
    model = mlp_block_model(opset=13)
    _input(model, [-1, 16])
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "?"
    x = np.random.default_rng(2).standard_normal((5, 16)).astype(np.float32)
    want = run_ort(model, {"x": x})[0]
    for name in ("simplify", "fold-constants", "fuse", "cleanup", "fp16"):
        out = create_pass(name).run(model, ctx(tmp_path)).model
        tol = 2e-2 if name == "fp16" else 1e-4
        np.testing.assert_allclose(run_ort(out, {"x": x})[0], want, rtol=tol, atol=tol)


def test_dynamic_int8_leaves_nothing_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ORT's symbolic shape inference cannot follow a custom op; when it fails it saves
    # sym_shape_infer_temp.onnx in the working directory.
    cwd, work = tmp_path / "cwd", tmp_path / "work"
    cwd.mkdir()
    work.mkdir()
    monkeypatch.chdir(cwd)
    w = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32), "w"
    )
    graph = helper.make_graph(
        [
            helper.make_node("Foo", ["x"], ["x2"], domain="com.example"),
            helper.make_node("MatMul", ["x2", "w"], ["y"]),
        ],
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])],
        [w],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.example", 1)]
    )
    model.ir_version = 8
    result = create_pass("quantize", {"mode": "dynamic"}).run(model, ctx(work, precision="int8"))
    assert "1 MatMulInteger" in result.notes[0]
    assert list(cwd.iterdir()) == []


def _scan8_model() -> onnx.ModelProto:
    """A running sum written with Scan-8, which onnx's converter lifts to a newer opset unchanged
    (its batch axis then reads as the sequence): "converted", with other results."""
    body = helper.make_graph(
        [
            helper.make_node("Add", ["s_in", "x_t"], ["s_out"]),
            helper.make_node("Relu", ["s_out"], ["y_t"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("s_in", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("x_t", TensorProto.FLOAT, [2]),
        ],
        [
            helper.make_tensor_value_info("s_out", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("y_t", TensorProto.FLOAT, [2]),
        ],
    )
    graph = helper.make_graph(
        [
            helper.make_node("Scan", ["", "s0", "x"], ["s", "ys"], num_scan_inputs=1, body=body),
            helper.make_node("MatMul", ["s", "w"], ["y"]),
        ],
        "scan8",
        [
            helper.make_tensor_value_info("s0", TensorProto.FLOAT, [1, 2]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 2]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, [2, 4]),  # IR 3 lists weights
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.ones((2, 4), np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 8)])
    model.ir_version = 3
    onnx.checker.check_model(model)
    return model


def test_static_int8_refuses_an_opset_8_model_the_converter_would_change(tmp_path: Path) -> None:
    feed = {"s0": np.zeros((1, 2), np.float32), "x": np.ones((1, 3, 2), np.float32)}
    calibration = CalibrationSet(feeds=(feed,), check=(), source="test", digest="scan8")
    c = ctx(tmp_path, precision="int8", calibration=calibration, cache_dir=tmp_path / "cache")
    with pytest.raises(PassError) as caught:
        create_pass("quantize", {"mode": "static"}).run(_scan8_model(), c)
    message = str(caught.value)
    assert message.startswith(
        "static INT8 needs opset 10 or more (QuantizeLinear); this model has opset 8, and the "
        "conversion to 13 could not be compared on onnxruntime ("
    )
    assert "\n" not in message
