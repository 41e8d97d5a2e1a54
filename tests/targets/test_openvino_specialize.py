"""OpenVINO and Ifs whose branches differ in rank (PyTorch's export of ``x.squeeze(d)``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from duh.compiler import build as build_model
from duh.targets.openvino._specialize import squeeze_ifs_to_squeeze

ov = pytest.importorskip("openvino")


def _squeeze_if_model(path: Path) -> Path:
    """x[N,4,T] -> If(T == 1: Squeeze(x, -1), else: Identity(x)) -> Unsqueeze(-1) -> Conv1d."""
    axes = numpy_helper.from_array(np.array([-1], np.int64), "axes")
    then = helper.make_graph(
        [helper.make_node("Constant", [], ["ax"], value=axes),
         helper.make_node("Squeeze", ["x", "ax"], ["sq"])],
        "then", [], [helper.make_tensor_value_info("sq", TensorProto.FLOAT, ["n", 4])],
    )  # fmt: skip
    other = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["id"])],
        "else", [], [helper.make_tensor_value_info("id", TensorProto.FLOAT, ["n", 4, "t"])],
    )  # fmt: skip
    weight = np.random.default_rng(0).standard_normal((3, 4, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "last"], ["size"], axis=0),
        helper.make_node("Equal", ["size", "one"], ["cond"]),
        helper.make_node("If", ["cond"], ["squeezed"], then_branch=then, else_branch=other),
        helper.make_node("Unsqueeze", ["squeezed", "last"], ["back"]),
        helper.make_node("Conv", ["back", "w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "squeeze_if",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, "t"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3, 1])],
        [
            numpy_helper.from_array(np.array(-1, np.int64), "last"),
            numpy_helper.from_array(np.array(1, np.int64), "one"),
            numpy_helper.from_array(weight, "w"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_the_squeeze_branch_replaces_the_if_and_computes_the_same(tmp_path: Path) -> None:
    path = _squeeze_if_model(tmp_path / "m.onnx")
    special, count = squeeze_ifs_to_squeeze(onnx.load(str(path)))
    assert count == 1
    assert "If" not in {n.op_type for n in special.graph.node}
    onnx.checker.check_model(special)
    x = np.random.default_rng(1).standard_normal((2, 4, 1)).astype(np.float32)
    runs = [
        ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        for m in (str(path), special.SerializeToString())
    ]
    np.testing.assert_array_equal(runs[0], runs[1])


def test_openvino_refuses_the_if_as_it_is(tmp_path: Path) -> None:
    path = _squeeze_if_model(tmp_path / "m.onnx")
    with pytest.raises(Exception, match="rank"):  # OpenVINO raises untyped errors
        ov.convert_model(str(path))


def test_openvino_build_specializes_the_if_and_matches_the_source(tmp_path: Path) -> None:
    path = _squeeze_if_model(tmp_path / "m.onnx")
    data = tmp_path / "check.npz"
    np.savez(data, x=np.random.default_rng(2).standard_normal((4, 4, 1)).astype(np.float32))
    result = build_model(path, "openvino:cpu-fp32", tmp_path / "m.duh", check_data=data)
    assert result.output is not None
    manifest = json.loads((result.output / "manifest.json").read_text())
    notes = manifest["build"]["compile_notes"]
    assert any("were made Squeeze" in note for note in notes), notes


def _silero() -> tuple[Path, Path]:
    from fixtures.fetch_models import cache_dir

    model, data = cache_dir() / "silero_vad.onnx", cache_dir() / "silero_vad.check.npz"
    if not (model.is_file() and data.is_file()):
        pytest.skip("silero_vad is not in the model cache (python -m fixtures.zoo_data)")
    return model, data


@pytest.mark.slow
def test_silero_vad_builds_for_openvino_and_matches_the_source(tmp_path: Path) -> None:
    model, data = _silero()
    result = build_model(model, "openvino:cpu-fp32", tmp_path / "vad.duh", check_data=data)
    assert result.output is not None and result.manifest is not None
    assert result.manifest.checks["passed"] and result.manifest.checks["precision"] == "fp32"


@pytest.mark.slow
def test_shapes_that_break_a_branch_of_silero_vad_are_refused_in_one_line(tmp_path: Path) -> None:
    from duh.compiler import ingest
    from duh.errors import ModelError

    model, _ = _silero()
    with pytest.raises(ModelError) as info:
        ingest(model, {"input": (2, 576), "state": (2, 2, 128)})
    message = str(info.value)
    assert "\n" not in message and "build without --shape" in message
    assert ingest(model).inputs  # left dynamic, the same model loads
