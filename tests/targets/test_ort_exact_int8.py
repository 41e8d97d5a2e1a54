"""int8 weights that ONNX Runtime's u8 x s8 kernels saturate on (x86 without VNNI) run exactly.

Seen on pyfrspell's ORT-quantized GRU models (MatMulInteger over full-range int8 weights): on an
AVX2 CPU ORT's outputs were off by 3.5 on logits of magnitude 26, so duh verified every build
against a wrong reference and picked the inexact ORT artifact as the fastest that passed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import duh
from duh.compiler import build
from duh.host import int8_dot_saturates
from duh.targets.onnxruntime import exact_int8_weights

K, N = 256, 16
RNG = np.random.default_rng(0)
# Full-range weights, and inputs whose neighbouring products overflow int16 in pairs.
WEIGHT = RNG.integers(-128, 128, (K, N)).astype(np.int8)
WEIGHT[:, 0] = np.where(np.arange(K) % 2, -128, 127)


def _matmul_integer(zero_point: int | None = 3, shared_by: str | None = None) -> onnx.ModelProto:
    """y = float(MatMulInteger(DynamicQuantizeLinear(x), W)) * scale: ORT's dynamic quantization."""
    inputs = ["xq", "w", "xzp"] + (["wzp"] if zero_point is not None else [])
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xzp"]),
        helper.make_node("MatMulInteger", inputs, ["acc"]),
        helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["xs", "ws"], ["scale"]),
        helper.make_node("Mul", ["accf", "scale"], ["y"]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, N])]
    if shared_by == "gather":  # the same int8 tensor also read as a table: it must stay int8
        nodes.append(helper.make_node("Gather", ["w", "ids"], ["rows"]))
        outputs.append(helper.make_tensor_value_info("rows", TensorProto.INT8, None))
    inits = [numpy_helper.from_array(WEIGHT, "w"), numpy_helper.from_array(np.float32(0.01), "ws")]
    if zero_point is not None:
        inits.append(numpy_helper.from_array(np.int8(zero_point), "wzp"))
    if shared_by == "gather":
        inits.append(numpy_helper.from_array(np.array([0, 2], np.int64), "ids"))
    graph = helper.make_graph(
        nodes, "dynamic_int8",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, K])], outputs, inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _qdq_conv() -> onnx.ModelProto:
    """A QDQ Conv with a full-range int8 weight, as ORT's static quantizer writes it."""
    c, m = 64, 8
    w = RNG.integers(-128, 128, (m, c, 3, 3)).astype(np.int8)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xzp"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xzp"], ["xf"]),
        helper.make_node("DequantizeLinear", ["w", "ws", "wzp"], ["wf"], axis=0),
        helper.make_node("Conv", ["xf", "wf"], ["y"], pads=[1, 1, 1, 1]),
    ]
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(np.full(m, 0.01, np.float32), "ws"),
        numpy_helper.from_array(np.zeros(m, np.int8), "wzp"),
        numpy_helper.from_array(np.float32(1 / 255), "xs"),
        numpy_helper.from_array(np.uint8(0), "xzp"),
    ]
    graph = helper.make_graph(
        nodes, "qdq_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, feed)[0])


def _exact_matmul(x: np.ndarray, zero_point: int) -> np.ndarray:
    """What the dynamic-quantized graph means, in exact integer arithmetic."""
    scale = np.float32((max(x.max(), 0) - min(x.min(), 0)) / 255)
    xzp = np.clip(np.round(-min(x.min(), 0) / scale), 0, 255)
    xq = np.clip(np.round(x / scale) + xzp, 0, 255).astype(np.int64)
    acc = (xq - int(xzp)) @ (WEIGHT.astype(np.int64) - zero_point)
    return acc.astype(np.float32) * (scale * np.float32(0.01))


def _input() -> np.ndarray:
    x = RNG.uniform(-1, 1, (4, K)).astype(np.float32)
    x[:, 0], x[:, 1] = 1.0, -1.0  # the quantized row spans 0..255
    x[0] = np.where(np.arange(K) % 2, -1.0, 1.0)
    return x


@pytest.mark.parametrize("zero_point", [3, None])
def test_moved_weights_multiply_exactly_where_the_int8_ones_may_not(zero_point) -> None:
    model, x = _matmul_integer(zero_point), _input()
    exact = _exact_matmul(x, zero_point or 0)
    moved = onnx.ModelProto()
    moved.CopyFrom(model)
    assert exact_int8_weights(moved) == 1
    onnx.checker.check_model(moved, full_check=True)
    [init] = [i for i in moved.graph.initializer if i.name == moved.graph.node[1].input[1]]
    assert init.data_type == TensorProto.UINT8 and "w" not in {
        i.name for i in moved.graph.initializer
    }
    np.testing.assert_allclose(_run(moved, {"x": x}), exact, rtol=1e-6, atol=1e-6)
    if int8_dot_saturates():  # this CPU shows the fault the move cures
        assert np.abs(_run(model, {"x": x}) - exact).max() > 0.1


def test_a_qdq_weight_moves_and_the_convolution_keeps_its_meaning() -> None:
    model = _qdq_conv()
    x = RNG.uniform(0, 1, (1, 64, 8, 8)).astype(np.float32)
    x[..., :4] = 1.0
    plain = onnx.ModelProto()
    plain.CopyFrom(model)
    moved = onnx.ModelProto()
    moved.CopyFrom(model)
    assert exact_int8_weights(moved) == 1
    # The float emulation of the QDQ graph (no fusion into int8 kernels) is its meaning.
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        plain.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    meaning = session.run(None, {"x": x})[0]
    np.testing.assert_allclose(_run(moved, {"x": x}), meaning, rtol=1e-5, atol=1e-3)


def test_what_cannot_move_is_left_as_it_is() -> None:
    shared = _matmul_integer(shared_by="gather")
    assert exact_int8_weights(shared) == 0  # also read by a Gather
    narrow = _matmul_integer()
    narrow.graph.initializer[0].CopyFrom(
        numpy_helper.from_array((WEIGHT // 4).astype(np.int8), "w")
    )
    assert exact_int8_weights(narrow, only_wide=True) == 0  # 7 bits: nothing saturates
    assert exact_int8_weights(narrow) == 1


def test_a_quantized_source_is_verified_against_exact_integer_math(tmp_path: Path) -> None:
    path = tmp_path / "dynamic_int8.onnx"
    onnx.save(_matmul_integer(), path)
    x = _input()
    np.savez(tmp_path / "check.npz", x=x)
    exact = _exact_matmul(x, 3)
    # OpenVINO's kernels stray from the exact result in their own way; the distance the build
    # reports is its distance to exact integer math, so the reference is exact.
    result = build(
        path, "openvino:cpu-fp32", tmp_path / "ov.duh", check_data=tmp_path / "check.npz"
    )
    [candidate] = result.candidates
    assert candidate.report is not None
    with duh.load(tmp_path / "ov.duh") as session:
        strays = np.abs(session.run({"x": x})["y"] - exact).max()
    assert candidate.report.outputs[0].max_abs == pytest.approx(strays, abs=1e-4)
    # The ONNX Runtime artifact is exact too, where its int8 kernels would saturate.
    result = build(
        path, "onnxruntime:cpu-fp32", tmp_path / "ort.duh", check_data=tmp_path / "check.npz"
    )
    [candidate] = result.candidates
    assert candidate.compiled is not None
    moved = any("held as uint8" in n for n in candidate.compiled.notes)
    assert moved == int8_dot_saturates()
    with duh.load(tmp_path / "ort.duh") as session:
        np.testing.assert_allclose(session.run({"x": x})["y"], exact, rtol=1e-5, atol=1e-5)
