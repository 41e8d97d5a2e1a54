"""Regression tests for the failure classes the conformance corpus found (besides the issue's five).

Each test builds a small model that shows its class (or takes the corpus case that showed it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import duh
from benchmarks._conformance_corpus import find_case, load_data
from duh.errors import TargetError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save_model(model, str(path))
    return path


def _ir3_model() -> onnx.ModelProto:
    """y = relu(x + b), IR version 3: the initializer b must also be listed as a graph input."""
    b = helper.make_tensor("b", TensorProto.FLOAT, [4], [0.5, -1.0, 2.0, -3.0])
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "b"], ["s"]), helper.make_node("Relu", ["s"], ["y"])],
        "ir3",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 8)])
    model.ir_version = 3
    return model


def test_ir3_model_with_initializers_as_inputs_builds(tmp_path: Path) -> None:
    """Class: IR 3 lists every initializer as an input; simplify's output failed the checker."""
    source = _save(_ir3_model(), tmp_path / "ir3.onnx")
    result = duh.build(source, "onnxruntime:cpu", tmp_path / "ir3.duh", check_samples=2)
    assert result.manifest is not None
    assert [s.name for s in result.source.inputs] == ["x"]
    x = np.arange(8, dtype=np.float32).reshape(2, 4) - 4.0
    got = duh.load(tmp_path / "ir3.duh").run({"x": x})["y"]
    np.testing.assert_allclose(got, np.maximum(x + np.array([0.5, -1.0, 2.0, -3.0]), 0.0))


def _expand_model() -> onnx.ModelProto:
    """y = Expand(x, shape): the values of the int64 input ``shape`` decide whether it runs."""
    graph = helper.make_graph(
        [helper.make_node("Expand", ["x", "shape"], ["y"])],
        "expand",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 1]),
            helper.make_tensor_value_info("shape", TensorProto.INT64, [2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["r", "c"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("target", ["onnxruntime:cpu", "openvino:cpu-fp32"])
def test_engine_rejecting_input_values_raises_target_error(tmp_path: Path, target: str) -> None:
    """Class: an engine's own exception escaped Session.run (and verification) as a traceback."""
    source = _save(_expand_model(), tmp_path / "expand.onnx")
    out = tmp_path / "expand.duh"
    duh.build(source, target, out, verify=False)
    session = duh.load(out)
    x = np.ones((3, 1), np.float32)
    assert session.run({"x": x, "shape": np.array([3, 4], np.int64)})["y"].shape == (3, 4)
    with pytest.raises(TargetError, match="failed to run the model on") as info:
        session.run({"x": x, "shape": np.array([2, 5], np.int64)})
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("target", ["openvino:cpu-fp32", "onnxruntime:cpu"])
def test_a_sequence_graph_runs_on_the_shipped_data(tmp_path: Path, target: str) -> None:
    """Class: OpenVINO's frontend renamed an input of a sequence graph and run() crashed; the
    lower-sequences pass now gives OpenVINO stacked tensors, so both engines run it."""
    case = find_case("simple/test_sequence_model1")
    data = load_data(case)[0]
    out = tmp_path / "seq.duh"
    duh.build(case.model, target, out, check_samples=1)
    with duh.load(out) as session:
        assert [s.name for s in session.inputs] == list(data.inputs)
        got = session.run(data.inputs)["out"]
    np.testing.assert_allclose(got, data.outputs[0], rtol=1e-5)


def test_nan_where_the_source_has_nan_passes_verification(tmp_path: Path) -> None:
    """Class: Sqrt of the synthetic (partly negative) inputs is NaN on every engine; verification
    compared NaN with NaN and refused every candidate (cosine 0)."""
    graph = helper.make_graph(
        [helper.make_node("Sqrt", ["x"], ["y"])],
        "sqrt",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    source = _save(model, tmp_path / "sqrt.onnx")
    result = duh.build(source, "onnxruntime:cpu", tmp_path / "sqrt.duh", check_samples=2)
    assert result.manifest is not None
    x = np.array([[4.0, -1.0, 9.0, 0.0] * 2] * 4, np.float32)
    got = duh.load(tmp_path / "sqrt.duh").run({"x": x})["y"]
    np.testing.assert_array_equal(np.isnan(got), x < 0)


def test_synthetic_calibration_keeps_each_inputs_fixed_first_size(tmp_path: Path) -> None:
    """Class: synthetic calibration cut every input to one batch (the largest fixed first size),
    so a model with inputs [2, 4] and [1, 3] got feeds ORT refused ("invalid dimensions")."""
    rng = np.random.default_rng(0)
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], rng.standard_normal(12).tolist())
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "w"], ["m"]), helper.make_node("Add", ["m", "c"], ["y"])],
        "two_batches",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 4]),
            helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 3]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    source = _save(model, tmp_path / "two.onnx")
    from duh.calibration import load_calibration
    from duh.compiler import ingest

    calibration = load_calibration("synthetic", ingest(source).inputs, samples=3)
    assert [{k: v.shape for k, v in f.items()} for f in calibration.feeds] == [
        {"a": (2, 4), "c": (1, 3)}
    ] * 3
    result = duh.build(
        source, "onnxruntime:cpu-int8", tmp_path / "two.duh", calib="synthetic", calib_samples=8
    )
    assert result.manifest is not None
