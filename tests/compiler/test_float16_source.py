"""A float16 source (an fp16 export): fp32 builds are held to fp16's tolerances, since engines
round a float16 graph differently (TVM computed this one 0.0076 away from ONNX Runtime, 76x
fp32's atol), the manifest says the source is float16, and INT8 says what to do instead."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from duh.cli import app
from duh.compiler import build
from duh.compiler._feeds import float16_source


def _half_classifier(path: Path, io: int = TensorProto.FLOAT16) -> Path:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float16), "w")
    b = numpy_helper.from_array((rng.standard_normal(8) * 0.1).astype(np.float16), "b")
    w2 = numpy_helper.from_array(
        (rng.standard_normal((8 * 16 * 16, 10)) * 0.05).astype(np.float16), "w2"
    )
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("MatMul", ["f", "w2"], ["l"]),
        helper.make_node("Softmax", ["l"], ["y"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "half",
        [helper.make_tensor_value_info("x", io, ["n", 3, 16, 16])],
        [helper.make_tensor_value_info("y", io, ["n", 10])],
        [w, b, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_a_float16_source_is_detected(tmp_path: Path, digits_model: Path) -> None:
    assert float16_source(onnx.load(str(_half_classifier(tmp_path / "h.onnx"))))
    assert not float16_source(onnx.load(str(digits_model)))


def test_fp32_builds_of_a_float16_source_use_fp16_tolerances(tmp_path: Path) -> None:
    pytest.importorskip("tvm")
    model = _half_classifier(tmp_path / "half.onnx")
    result = build(model, "tvm:cpu", tmp_path / "half.duh")
    assert result.manifest is not None
    assert result.manifest.source["float16"] is True
    checks = result.manifest.checks
    assert checks["passed"] and "fp16 tolerances" in checks["criteria"]
    assert any("computes in float16" in w for w in result.warnings)


def test_int8_of_a_float16_source_says_what_to_build_instead(tmp_path: Path) -> None:
    model = _half_classifier(tmp_path / "half.onnx")
    out = tmp_path / "half.int8.duh"
    done = CliRunner().invoke(
        app, ["build", str(model), "-t", "cpu-int8", "--calib", "synthetic", "-o", str(out)]
    )
    assert done.exit_code != 0 and "Traceback" not in done.stderr
    text = " ".join(done.stderr.split())
    assert "a float16 model?" in text and "--target cpu-bf16 or cpu" in text
    assert not out.exists()
