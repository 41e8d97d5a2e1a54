"""``--calib synthetic`` draws integer inputs from the ranges the graph gives (Gather tables)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from duh.calibration import load_calibration
from duh.compiler import build
from duh.runtime import TensorSpec, ValueRange


def _embedding(path: Path) -> Path:
    """ids [batch, 5] -> Gather from a 3-row table -> MatMul: ids of 3 or more are invalid."""
    rng = np.random.default_rng(0)
    table = numpy_helper.from_array(rng.standard_normal((3, 8)).astype(np.float32), "table")
    w = numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"]),
        helper.make_node("MatMul", ["emb", "w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "embedding",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5, 4])],
        [table, w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_synthetic_calibration_keeps_integers_in_their_range() -> None:
    spec = TensorSpec("ids", "int64", ("batch", 5))
    data = load_calibration(
        "synthetic", [spec], samples=16, ranges={"ids": ValueRange(0, 3, "a table of 3")}
    )
    values = np.concatenate([f["ids"].ravel() for f in data.feeds])
    assert values.min() >= 0 and values.max() == 2


def test_int8_on_synthetic_calibration_builds_an_embedding_model(tmp_path: Path) -> None:
    model = _embedding(tmp_path / "embedding.onnx")
    result = build(model, "onnxruntime:cpu-int8", tmp_path / "emb.duh", calib="synthetic")
    assert result.manifest is not None and result.manifest.checks["passed"]
