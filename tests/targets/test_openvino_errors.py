"""OpenVINO's errors, read down to the line that says what is wrong."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

ov = pytest.importorskip("openvino")

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
