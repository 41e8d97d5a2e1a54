"""OpenVINO builds of models with ops it cannot run: those ops run on ONNX Runtime, in stages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import duh
from duh.errors import ArtifactError, TargetError
from duh.targets.openvino._partition import split_stages

pytest.importorskip("openvino")

# StringNormalizer's default locale (en_US.UTF-8) is missing from many machines; C.UTF-8 is not.
_LOCALE = "C.UTF-8"


def _save(path: Path, nodes: list, inputs: list, outputs: list, ml: bool = False) -> Path:
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("ai.onnx.ml", 3)] if ml else [])
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs), opset_imports=opsets)
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _text_features(path: Path) -> Path:
    """Strings normalized and looked up (ONNX Runtime only), then float maths (OpenVINO)."""
    nodes = [
        helper.make_node(
            "StringNormalizer", ["s"], ["norm"], case_change_action="LOWER", locale=_LOCALE
        ),
        helper.make_node(
            "LabelEncoder",
            ["norm"],
            ["ids"],
            domain="ai.onnx.ml",
            keys_strings=["red", "green", "blue"],
            values_int64s=[0, 1, 2],
            default_int64=3,
        ),
        helper.make_node("Cast", ["ids"], ["idf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["idf", "x"], ["scaled"]),
        helper.make_node("Sigmoid", ["scaled"], ["y"]),
    ]
    inputs = [
        helper.make_tensor_value_info("s", TensorProto.STRING, ["n"]),
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"]),
    ]
    outputs = [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"]),
        helper.make_tensor_value_info("norm", TensorProto.STRING, ["n"]),
    ]
    return _save(path, nodes, inputs, outputs, ml=True)


def _sandwich(path: Path) -> Path:
    """Float ops, then strings in the middle, then float ops: three stages.

    OpenVINO's frontend converts the Casts to and from strings, but its CPU plugin has no
    kernel for them: they move to ONNX Runtime one compile at a time.
    """
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Cast", ["r"], ["rs"], to=TensorProto.STRING),
        helper.make_node("StringNormalizer", ["rs"], ["n"], locale=_LOCALE),
        helper.make_node("Cast", ["n"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["f", "r"], ["y"]),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])]
    return _save(path, nodes, inputs, outputs)


def _stages(artifact: Path) -> list[dict]:
    return json.loads((artifact / "manifest.json").read_text())["engine_config"]["stages"]


def test_string_ops_run_on_onnxruntime_and_the_rest_on_openvino(tmp_path: Path) -> None:
    src = _text_features(tmp_path / "text.onnx")
    result = duh.build(src, "openvino:cpu-fp32", tmp_path / "text.duh", cache=False)
    assert result.manifest.checks["passed"]
    stages = _stages(result.output)
    assert [s["engine"] for s in stages] == ["onnxruntime", "openvino"]
    assert stages[0]["outputs"] == ["norm", "ids"]
    assert stages[1]["inputs"] == ["ids", "x"]
    notes = result.manifest.build["compile_notes"]
    assert "cannot run 2 of the model's 5 ops (StringNormalizer, LabelEncoder)" in notes[0]
    feed = {
        "s": np.array(["Red", "BLUE", "violet", "green"], dtype=object),
        "x": np.array([0.5, -1.0, 2.0, 3.0], dtype=np.float32),
    }
    expected = ort.InferenceSession(str(src)).run(None, feed)
    got = duh.load(result.output).run(feed)
    np.testing.assert_allclose(got["y"], expected[0], rtol=1e-6)
    assert list(got["norm"]) == ["red", "blue", "violet", "green"]


def test_ops_without_a_cpu_kernel_move_to_onnxruntime_too(tmp_path: Path) -> None:
    src = _sandwich(tmp_path / "sandwich.onnx")
    result = duh.build(src, "openvino:cpu-fp32", tmp_path / "s.duh", cache=False)
    stages = _stages(result.output)
    assert [s["engine"] for s in stages] == ["openvino", "onnxruntime", "openvino"]
    assert stages[1]["inputs"] == ["r"] and stages[1]["outputs"] == ["f"]
    assert stages[2]["inputs"] == ["f", "r"]
    feed = {"x": np.array([1.5, -2.0, 3.25], dtype=np.float32)}
    got = duh.load(result.output).run(feed)["y"]
    np.testing.assert_allclose(got, [2.25, 0.0, 10.5625], rtol=1e-6)


def test_a_stage_list_pointing_outside_the_artifact_is_refused(tmp_path: Path) -> None:
    src = _text_features(tmp_path / "text.onnx")
    out = duh.build(src, "openvino:cpu-fp32", tmp_path / "t.duh", cache=False).output
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["engine_config"]["stages"][0]["model"] = "../text.onnx"
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="not one of the artifact's"):
        duh.load(out)


def test_split_of_an_interleaved_graph_computes_what_the_model_does() -> None:
    # a -> [ort] b -> [ov] c; a -> [ov] d; c, d -> [ort] e: d joins c's stage, e comes last
    nodes = [
        helper.make_node("Neg", ["x"], ["b"]),
        helper.make_node("Exp", ["b"], ["c"]),
        helper.make_node("Abs", ["x"], ["d"]),
        helper.make_node("Add", ["c", "d"], ["e"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [
            helper.make_tensor_value_info("e", TensorProto.FLOAT, [3]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [3]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    stages = split_stages(model, {0, 3})
    assert stages is not None
    assert [(s.engine, s.op_types) for s in stages] == [
        ("openvino", ["Abs"]),
        ("onnxruntime", ["Neg"]),
        ("openvino", ["Exp"]),
        ("onnxruntime", ["Add"]),
    ]
    values = {"x": np.array([0.5, -1.0, 2.0], dtype=np.float32)}
    for stage in stages:
        session = ort.InferenceSession(stage.model.SerializeToString())
        outs = session.run(list(stage.outputs), {n: values[n] for n in stage.inputs})
        values.update(zip(stage.outputs, outs, strict=True))
    np.testing.assert_allclose(values["e"], np.exp(-values["x"]) + np.abs(values["x"]), rtol=1e-6)
    np.testing.assert_allclose(values["b"], -values["x"])


def test_an_unconvertible_op_inside_a_branch_keeps_the_conversion_error(tmp_path: Path) -> None:
    # duh places main-graph nodes only: an If whose branch holds the op fails as before
    branch = helper.make_graph(
        [helper.make_node("StringNormalizer", ["s"], ["t"], locale=_LOCALE)],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.STRING, [2])],
    )
    other = helper.make_graph(
        [helper.make_node("Identity", ["s"], ["u"])],
        "else",
        [],
        [helper.make_tensor_value_info("u", TensorProto.STRING, [2])],
    )
    nodes = [helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=other)]
    inputs = [
        helper.make_tensor_value_info("c", TensorProto.BOOL, []),
        helper.make_tensor_value_info("s", TensorProto.STRING, [2]),
    ]
    src = _save(
        tmp_path / "if.onnx",
        nodes,
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.STRING, [2])],
    )
    with pytest.raises(TargetError, match="openvino cannot convert the model"):
        duh.build(src, "openvino:cpu-fp32", tmp_path / "if.duh", cache=False, verify=False)
