"""A float16 source (an fp16 export): fp32 builds are held to fp16's tolerances, since engines
round a float16 graph differently (TVM computed this one 0.0076 away from ONNX Runtime, 76x
fp32's atol), the manifest says the source is float16, and INT8 quantizes its float32 form."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

import duh
from duh.cli import app
from duh.compiler import build
from duh.passes import computes_in_float16 as float16_source
from duh.passes._upcast import to_float32


def _half_classifier(path: Path, io: int = TensorProto.FLOAT16, dtype: type = np.float16) -> Path:
    """A Conv (float16), or a MatMul (float64: ONNX Runtime has no float64 Conv) classifier."""
    rng = np.random.default_rng(0)
    if dtype is np.float16:
        w = numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(dtype), "w")
        b = numpy_helper.from_array((rng.standard_normal(8) * 0.1).astype(dtype), "b")
        first = helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1])
    else:
        w = numpy_helper.from_array((rng.standard_normal((16, 16)) * 0.3).astype(dtype), "w")
        b = numpy_helper.from_array((rng.standard_normal(16) * 0.1).astype(dtype), "b")
        first = helper.make_node("Gemm", ["x", "w", "b"], ["c"])  # x[n, 16]
    w2 = numpy_helper.from_array(
        (rng.standard_normal((8 * 16 * 16 if dtype is np.float16 else 16, 10)) * 0.05).astype(
            dtype
        ),
        "w2",
    )
    nodes = [
        first,
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("MatMul", ["f", "w2"], ["l"]),
        helper.make_node("Softmax", ["l"], ["y"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "half",
        [
            helper.make_tensor_value_info(
                "x", io, ["n", 3, 16, 16] if dtype is np.float16 else ["n", 16]
            )
        ],
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


@pytest.mark.parametrize(
    ("target", "dtype"),
    [
        ("onnxruntime:cpu-int8", np.float16),
        ("openvino:cpu-int8", np.float16),
        ("onnxruntime:cpu-int8", np.float64),  # skl2onnx's DoubleTensorType
        ("openvino:cpu-int8", np.float64),
    ],
)
def test_int8_of_a_float16_or_float64_source_quantizes_its_float32_form(
    tmp_path: Path, target: str, dtype: type
) -> None:
    io = TensorProto.FLOAT16 if dtype is np.float16 else TensorProto.DOUBLE
    model = _half_classifier(tmp_path / "half.onnx", io, dtype)
    out = tmp_path / "half.int8.duh"
    done = CliRunner().invoke(
        app, ["build", str(model), "-t", target, "--calib", "synthetic", "-o", str(out)]
    )
    assert done.exit_code == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["checks"]["passed"]
    notes = [n for p in manifest["passes"] if p["name"] == "quantize" for n in p["notes"]]
    assert any("quantized from its float32 form" in n for n in notes)
    # The artifact takes and returns the source's type.
    session = duh.load(out)
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16) if dtype is np.float16 else (2, 16))
    x = x.astype(dtype)
    [y] = session.run({"x": x}).values()
    assert y.dtype == dtype and y.shape == (2, 10)


def test_upcast_keeps_io_and_reaches_casts_constants_and_subgraphs() -> None:
    half = TensorProto.FLOAT16
    then = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["t"], to=half)],
        "then",
        [],
        [helper.make_tensor_value_info("t", half, [2])],
    )
    other = helper.make_graph(
        [
            helper.make_node(
                "Constant", [], ["e"], value=numpy_helper.from_array(np.ones(2, np.float16))
            )
        ],
        "else",
        [],
        [helper.make_tensor_value_info("e", half, [2])],
    )
    graph = helper.make_graph(
        [
            helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
            helper.make_node("Cast", ["s"], ["c"], to=TensorProto.BOOL),
            helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other),
        ],
        "g",
        [helper.make_tensor_value_info("x", half, [2])],
        [helper.make_tensor_value_info("y", half, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    up, changed = to_float32(model)
    assert changed >= 4
    onnx.checker.check_model(up, full_check=True)
    assert up.graph.input[0].type.tensor_type.elem_type == half
    assert up.graph.output[0].type.tensor_type.elem_type == half
    import onnxruntime as ort

    for src in (model, up):
        session = ort.InferenceSession(src.SerializeToString(), providers=["CPUExecutionProvider"])
        for x in (np.array([1.5, 2.0], np.float16), np.zeros(2, np.float16)):
            got = session.run(None, {"x": x})[0]
            want = x if x.any() else np.ones(2, np.float16)
            assert got.dtype == np.float16 and np.array_equal(got, want)
