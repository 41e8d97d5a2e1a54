"""cuda-int8: Q/DQ placement checked against TensorRT's rules on the ONNX graph (no GPU needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from duh.compiler.ingest import ingest
from duh.errors import TargetError
from duh.passes import PassContext, create_pass
from duh.targets._gpu import check_qdq, fold_bias_dequantize, int8_quantize_config, prepare_int8

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


@pytest.fixture(scope="module")
def digits_float() -> onnx.ModelProto:
    model = ingest(FIXTURES / "digits_cnn.onnx").model
    for name in ("simplify", "cleanup"):
        model = create_pass(name).run(model, PassContext("tensorrt", "cuda", "int8", Path("."))).model
    return model


def _quantized(model: onnx.ModelProto, tmp: Path, **config: object) -> onnx.ModelProto:
    from duh.calibration import load_calibration

    source = ingest(FIXTURES / "digits_cnn.onnx")
    calibration = load_calibration(
        FIXTURES / "digits_calib.npz", source.inputs, samples=64, holdout=8, shapes={}
    )
    ctx = PassContext("tensorrt", "cuda", "int8", tmp, calibration=calibration, cache_dir=tmp)
    return create_pass("quantize", config).run(model, ctx).model


def test_the_tensorrt_quantize_config_meets_tensorrts_rules(
    digits_float: onnx.ModelProto, tmp_path: Path
) -> None:
    qdq = _quantized(digits_float, tmp_path, **int8_quantize_config())
    ready, notes = prepare_int8(qdq)
    assert check_qdq(ready) == []
    assert any("folded to float biases" in n for n in notes)
    # Folding the int32 biases back to float does not change the numbers.
    feed = {"input": np.load(FIXTURES / "digits_test.npz")["input"][:32]}
    # Without ORT's QDQ fusions both run as DQ -> float op -> Q: the model's own arithmetic, not
    # integer kernels whose rounding differs by CPU (u8/s8 products saturate without VNNI).
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    before = ort.InferenceSession(qdq.SerializeToString(), plain).run(None, feed)[0]
    after = ort.InferenceSession(ready.SerializeToString(), plain).run(None, feed)[0]
    np.testing.assert_allclose(after, before, atol=1e-5)
    # Per-channel weights, per-tensor activations, all int8 with zero points of 0.
    inits = {i.name: i for i in ready.graph.initializer}
    for node in ready.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            assert inits[node.input[2]].data_type == TensorProto.INT8
            assert not numpy_helper.to_array(inits[node.input[2]]).any()


def test_the_default_asymmetric_quantization_breaks_tensorrts_rules(
    digits_float: onnx.ModelProto, tmp_path: Path
) -> None:
    qdq = _quantized(digits_float, tmp_path, mode="static")
    found = check_qdq(fold_bias_dequantize(qdq)[0])
    assert "int8-only" in {v.rule for v in found}
    assert any("quantizes to uint8" in str(v) for v in found)
    with pytest.raises(TargetError, match="breaks TensorRT's quantization rules"):
        prepare_int8(qdq)


def test_a_model_without_qdq_cannot_build_int8(digits_float: onnx.ModelProto) -> None:
    with pytest.raises(TargetError, match="explicit Q/DQ"):
        prepare_int8(digits_float)


def _qdq_conv(
    *,
    weight_axis: int = 0,
    act_scale: np.ndarray | None = None,
    act_zero: int = 0,
    scale_is_input: bool = False,
    q_feeds_relu: bool = False,
) -> onnx.ModelProto:
    """x -> Q -> DQ -> Conv(DQ(int8 weight)) -> y, with one rule broken as asked."""
    rng = np.random.default_rng(0)
    weight = rng.integers(-100, 100, (4, 3, 3, 3)).astype(np.int8)
    w_scales = np.full(weight.shape[weight_axis], 0.01, np.float32)
    inits = [
        numpy_helper.from_array(weight, "w_q"),
        numpy_helper.from_array(w_scales, "w_scale"),
        numpy_helper.from_array(np.zeros(len(w_scales), np.int8), "w_zero"),
        numpy_helper.from_array(np.array(act_zero, np.int8), "x_zero"),
    ]
    if act_scale is None:
        act_scale = np.array(0.05, np.float32)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])]
    if scale_is_input:
        inputs.append(helper.make_tensor_value_info("x_scale", TensorProto.FLOAT, []))
    else:
        inits.append(numpy_helper.from_array(act_scale, "x_scale"))
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"], name="q_x"),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xd"], name="dq_x"),
        helper.make_node(
            "DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], name="dq_w", axis=weight_axis
        ),
        helper.make_node("Conv", ["xd", "w"], ["y"], name="conv", pads=[1, 1, 1, 1]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])]
    if q_feeds_relu:
        nodes.append(helper.make_node("Cast", ["xq"], ["xc"], name="cast", to=TensorProto.FLOAT))
        outputs.append(helper.make_tensor_value_info("xc", TensorProto.FLOAT, [1, 3, 8, 8]))
    graph = helper.make_graph(nodes, "qdq", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_well_formed_qdq_conv_passes() -> None:
    model = _qdq_conv()
    onnx.checker.check_model(model)
    assert check_qdq(model) == []


@pytest.mark.parametrize(
    ("model", "rule", "text"),
    [
        (_qdq_conv(weight_axis=1), "channel-axis", "output channels on axis 0"),
        (_qdq_conv(act_zero=3), "symmetric", "zero point is not 0"),
        (_qdq_conv(act_scale=np.array(-0.05, np.float32)), "positive-scale", "<= 0"),
        (_qdq_conv(act_scale=np.full(3, 0.05, np.float32)), "per-tensor-activations", "per channel"),
        (_qdq_conv(scale_is_input=True), "constant-scale", "not a constant"),
        (_qdq_conv(q_feeds_relu=True), "q-then-dq", "feeds Cast"),
    ],
)
def test_each_tensorrt_rule_is_checked(model: onnx.ModelProto, rule: str, text: str) -> None:
    found = [v for v in check_qdq(model) if v.rule == rule]
    assert found, check_qdq(model)
    assert text in str(found[0])


def test_a_uint8_quantize_without_zero_point_is_refused() -> None:
    model = _qdq_conv()
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
    del q.input[2:]
    assert "int8-only" in {v.rule for v in check_qdq(model)}
