"""OpenVINO's errors, read down to the line that says what is wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ov = pytest.importorskip("openvino")

from duh.compiler import build as build_model  # noqa: E402
from duh.errors import TargetError  # noqa: E402
from duh.targets.openvino._convert import reason as _reason  # noqa: E402


def test_a_plugin_error_names_the_node_and_what_is_wrong() -> None:
    # OpenVINO's message starts with two source locations; the line after the node's name
    # is the one a user can act on.
    graph = helper.make_graph(
        [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[4, 4], name="pool")],
        "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    core = ov.Core()
    compiled = core.compile_model(core.read_model(model.SerializeToString(), b""), "CPU")
    with pytest.raises(Exception) as caught:  # OpenVINO raises untyped errors
        compiled({"x": np.zeros((1, 1, 2, 2), np.float32)})
    assert str(caught.value).startswith("Exception from src/")
    reason = _reason(caught.value)
    assert reason.startswith("[CPU] MaxPool node with name ") and "Kernel" in reason
    assert "\n" not in reason and "Exception from" not in reason


def _squeeze_model(path: Path) -> Path:
    """x[batch, 4] -> Gemm -> [batch, 1] -> Squeeze (no axes): a rank that depends on the batch,
    as PyTorch's ``.squeeze()`` of a score exports (speechmos' plcmos)."""
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["x", "w"], ["score"], transB=1),
            helper.make_node("Squeeze", ["score"], ["y"], name="squeeze_all"),
        ],
        "squeeze",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
        [numpy_helper.from_array(np.ones((1, 4), np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=7)
    onnx.save(model, str(path))
    return path


def test_a_plugin_refusal_of_dynamic_rank_names_the_op_and_the_shape_that_cures_it(
    tmp_path: Path,
) -> None:
    path = _squeeze_model(tmp_path / "m.onnx")
    with pytest.raises(TargetError) as caught:
        build_model(path, "openvino:cpu-fp32", tmp_path / "m.duh")
    message = str(caught.value)
    assert "\n" not in message and "model.xml" not in message
    assert "Squeeze operation with dynamic rank" in message and "x [batch, 4]" in message
    assert "--shape x=1x4" in message and "onnxruntime:cpu-fp32" in message
    # The advice holds: with the batch fixed the same model builds and matches the source.
    result = build_model(path, "openvino:cpu-fp32", tmp_path / "f.duh", shapes={"x": (1, 4)})
    assert result.manifest is not None and result.manifest.checks["passed"]
