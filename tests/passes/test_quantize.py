from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from duh.calibration import CalibrationSet, load_calibration
from duh.compiler.ingest import ingest
from duh.errors import CalibrationError
from duh.passes import create_pass
from tests.passes._models import FIXTURES, ctx, make_model, mlp_block_model, run_ort, run_ov

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def digits() -> tuple[onnx.ModelProto, object, np.ndarray, np.ndarray]:
    source = ingest(FIXTURES / "digits_cnn.onnx")
    calibration = load_calibration(
        FIXTURES / "digits_calib.npz", source.inputs, samples=128, holdout=8
    )
    test = np.load(FIXTURES / "digits_test.npz")
    return source.model, calibration, test["input"], test["label"]


def _quantize(
    model: onnx.ModelProto,
    calibration: object,
    tmp_path: Path,
    engine: str = "onnxruntime",
    **config: object,
) -> tuple[onnx.ModelProto, tuple[str, ...]]:
    c = ctx(
        tmp_path,
        engine=engine,
        precision="int8",
        calibration=calibration,
        cache_dir=tmp_path / "cache",
    )
    model = (
        create_pass("fuse").run(model, c).model
    )  # fold BatchNormalization first, as the pipeline does
    result = create_pass("quantize", config).run(model, c)
    onnx.checker.check_model(result.model)
    return result.model, result.notes


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_static_qdq_keeps_top1_on_both_engines(digits, tmp_path: Path, engine: str) -> None:  # type: ignore[no-untyped-def]
    model, calibration, x, labels = digits
    quantized, notes = _quantize(model, calibration, tmp_path, engine)
    ops = _ops(quantized)
    assert ops.count("QuantizeLinear") >= 4 and "DequantizeLinear" in ops
    # Per-channel weights: the Conv weight's scale has one value per output channel.
    inits = {i.name: i for i in quantized.graph.initializer}
    conv = next(n for n in quantized.graph.node if n.op_type == "Conv")
    dq = next(n for n in quantized.graph.node if n.output[0] == conv.input[1])
    assert list(inits[dq.input[1]].dims) == [inits[dq.input[0]].dims[0]]
    assert inits[dq.input[0]].data_type == TensorProto.INT8
    want = run_ort(model, {"input": x})[0]
    got = (
        run_ort(quantized, {"input": x})
        if engine == "onnxruntime"
        else run_ov(quantized, {"input": x}, tmp_path)
    )[0]
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.99
    assert np.mean(got.argmax(1) == labels) >= np.mean(want.argmax(1) == labels) - 0.01
    assert any("minmax over 128 samples" in n for n in notes)
    # OpenVINO gets Q/DQ on op inputs only (as NNCF places them), ONNX Runtime on outputs too.
    placement = "inputs" if engine == "openvino" else "outputs"
    assert any(f"on op {placement}" in n for n in notes)
    # The logits stay float: no Q/DQ pair right before the graph output.
    assert quantized.graph.output[0].name in {
        o for n in quantized.graph.node if n.op_type == "Gemm" for o in n.output
    }


def test_symmetric_activations_have_zero_points_of_zero(digits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, calibration, x, _ = digits
    quantized, notes = _quantize(model, calibration, tmp_path, symmetric_activations=True)
    inits = {i.name: numpy_helper.to_array(i) for i in quantized.graph.initializer}
    points = [inits[n.input[2]] for n in quantized.graph.node if n.op_type == "QuantizeLinear"]
    assert points and all(p.dtype == np.int8 and not p.any() for p in points)
    want, got = run_ort(model, {"input": x})[0], run_ort(quantized, {"input": x})[0]
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.98
    assert any("int8 symmetric" in n for n in notes)


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_other_calibrators_are_selectable(digits, tmp_path: Path, method: str) -> None:  # type: ignore[no-untyped-def]
    model, calibration, x, _ = digits
    minmax, _ = _quantize(model, calibration, tmp_path / "a")
    other, notes = _quantize(model, calibration, tmp_path / "b", calibrator=method)
    assert any(f"calibration: {method}" in n for n in notes)

    def scales(m: onnx.ModelProto) -> list[float]:
        inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
        return [float(inits[n.input[1]]) for n in m.graph.node if n.op_type == "QuantizeLinear"]

    # Clipping the tails gives finer steps (smaller scales) than min/max on some tensor.
    assert any(b < a * 0.999 for a, b in zip(scales(minmax), scales(other), strict=True))
    want, got = run_ort(model, {"input": x})[0], run_ort(other, {"input": x})[0]
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.98


def test_calibration_is_cached_and_reused(digits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, calibration, _, _ = digits
    first, notes1 = _quantize(model, calibration, tmp_path)
    second, notes2 = _quantize(model, calibration, tmp_path)
    assert any("over 128 samples" in n and "cached" not in n for n in notes1)
    assert any("over 128 samples" in n and "(cached ranges reused)" in n for n in notes2)
    assert len(list((tmp_path / "cache" / "calibration").glob("*.json"))) == 1
    assert first.SerializeToString() == second.SerializeToString()


def test_static_without_calibration_explains(tmp_path: Path) -> None:
    model = onnx.load(str(FIXTURES / "digits_cnn.onnx"))
    with pytest.raises(CalibrationError, match="needs calibration data"):
        create_pass("quantize", {"mode": "static"}).run(model, ctx(tmp_path))


def test_dynamic_int8_for_a_transformer_block(tmp_path: Path) -> None:
    model = mlp_block_model()
    quantize = create_pass("quantize")
    assert quantize.resolved_mode(model) == "dynamic"  # type: ignore[attr-defined]
    assert not quantize.needs_calibration(model)  # type: ignore[attr-defined]
    result = quantize.run(model, ctx(tmp_path))
    ops = _ops(result.model)
    assert "DynamicQuantizeLinear" in ops and "MatMulInteger" in ops
    x = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32)
    want, got = run_ort(model, {"x": x})[0], run_ort(result.model, {"x": x})[0]
    cosine = float(np.dot(want.ravel(), got.ravel()) / np.linalg.norm(want) / np.linalg.norm(got))
    assert cosine > 0.99
    ov_got = run_ov(result.model, {"x": x}, tmp_path)[0]
    np.testing.assert_allclose(ov_got, got, atol=0.05 * np.abs(got).max())


def test_int4_weight_only_for_large_matmuls(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    big = numpy_helper.from_array(
        (rng.standard_normal((256, 512)) / 16).astype(np.float32), "w_big"
    )
    small = numpy_helper.from_array(
        (rng.standard_normal((512, 8)) / 16).astype(np.float32), "w_small"
    )
    nodes = [
        helper.make_node("MatMul", ["x", "w_big"], ["h"], name="big"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w_small"], ["y"], name="small"),
    ]
    model = make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])],
        [big, small],
        opset=21,
    )
    result = create_pass("quantize", {"mode": "int4", "block_size": 32}).run(model, ctx(tmp_path))
    assert _ops(result.model) == ["MatMulNBits", "Relu", "MatMul"]  # the small MatMul stays float
    assert result.model.ByteSize() < 0.4 * model.ByteSize()
    x = rng.standard_normal((4, 256)).astype(np.float32)
    want, got = run_ort(model, {"x": x})[0], run_ort(result.model, {"x": x})[0]
    cosine = float(np.dot(want.ravel(), got.ravel()) / np.linalg.norm(want) / np.linalg.norm(got))
    assert cosine > 0.99


def test_an_already_quantized_model_is_not_quantized_again(digits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, calibration, _, _ = digits
    quantized, _ = _quantize(model, calibration, tmp_path)
    quantize = create_pass("quantize")
    assert not quantize.needs_calibration(quantized)  # type: ignore[attr-defined]
    result = quantize.run(quantized, ctx(tmp_path))
    assert not result.changed and result.model is quantized
    assert (
        result.notes
        and "already quantized" in result.notes[0]
        and "QuantizeLinear" in result.notes[0]
    )


def test_input_placement_leaves_conv_outputs_float(digits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, calibration, _, _ = digits
    both, _ = _quantize(model, calibration, tmp_path / "a", placement="outputs")
    inputs, _ = _quantize(model, calibration, tmp_path / "b", placement="inputs")

    def quantized_conv_outputs(m: onnx.ModelProto) -> int:
        convs = {o for n in m.graph.node if n.op_type == "Conv" for o in n.output}
        return sum(1 for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in convs)

    assert quantized_conv_outputs(both) >= 1 and quantized_conv_outputs(inputs) == 0


def _weight_range(model: onnx.ModelProto) -> int:
    """The largest |int8| weight the quantizer wrote (127 full range, 63/64 with 7 bits)."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    weights = [
        inits[n.input[0]]
        for n in model.graph.node
        if n.op_type == "DequantizeLinear"
        and n.input[0] in inits
        and inits[n.input[0]].dtype == np.int8
        and inits[n.input[0]].ndim > 1
    ]
    return int(max(np.abs(w.astype(np.int32)).max() for w in weights))


def test_reduce_range_follows_the_cpu_unless_set(digits, tmp_path: Path) -> None:
    from duh.host import cpu_flags

    model, calibration, _, _ = digits
    no_dot = not cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"}
    auto, notes = _quantize(model, calibration, tmp_path)
    assert (_weight_range(auto) <= 64) is no_dot
    assert any("7-bit weights" in n for n in notes) is no_dot
    full, _ = _quantize(model, calibration, tmp_path, reduce_range=False)
    seven, notes = _quantize(model, calibration, tmp_path, reduce_range=True)
    assert _weight_range(full) == 127 and _weight_range(seven) <= 64
    assert not any("7-bit weights" in n for n in notes)  # asked for: nothing to explain


def _conv_opset11() -> onnx.ModelProto:
    """Conv -> Relu -> Conv at opset 11, whose filters differ in scale by 100x: per-tensor
    weights lose the small filters."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 1, (8, 3, 3, 3)).astype(np.float32) * np.logspace(-1, 1, 8)[
        :, None, None, None
    ].astype(np.float32)
    w2 = rng.normal(0, 0.3, (4, 8, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1]),
        ],
        "conv11",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=7)


@pytest.mark.skipif(importlib.util.find_spec("nncf") is None, reason="nncf not installed")
def test_nncf_raises_an_old_opset_for_per_channel_weights_and_keeps_its_log_quiet(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(1)
    feeds = tuple({"x": rng.normal(0, 1, (1, 3, 16, 16)).astype(np.float32)} for _ in range(8))
    calibration = CalibrationSet(feeds, (), "test", "conv-opset11")
    quantized, notes = _quantize(_conv_opset11(), calibration, tmp_path, "openvino", mode="nncf")
    assert any("opset 11 -> 13" in n for n in notes), notes
    inits = {i.name: numpy_helper.to_array(i) for i in quantized.graph.initializer}
    conv_weights = {n.input[1] for n in quantized.graph.node if n.op_type == "Conv"}
    scales = [
        inits[n.input[1]]
        for n in quantized.graph.node
        if n.op_type == "DequantizeLinear" and n.output[0] in conv_weights
    ]
    # NNCF on opset 11 puts every weight per tensor (one scale); per channel: one per filter
    assert scales and all(s.size > 1 for s in scales), [s.shape for s in scales]
    assert "INFO:nncf" not in capfd.readouterr().err
    assert logging.getLogger("nncf").handlers, "NNCF's own handler is put back"
