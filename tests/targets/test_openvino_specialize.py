"""OpenVINO and graphs it refuses as exported: If branches that differ in rank (PyTorch's export
of ``x.squeeze(d)``), If conditions of shape [1, 1] (PyTorch's ``if p >= 0.5`` on a
probability), graph outputs that are graph inputs or weights (a state passed through)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import duh
from duh.compiler import build as build_model
from duh.targets.openvino._specialize import (
    distinct_outputs,
    scalar_if_conditions,
    squeeze_ifs_to_squeeze,
)
from tests._if_models import rank_if_model
from tests.compiler._wild import save

ov = pytest.importorskip("openvino")


def test_the_squeeze_branch_replaces_the_if_and_computes_the_same(tmp_path: Path) -> None:
    path = rank_if_model(tmp_path / "m.onnx")
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
    path = rank_if_model(tmp_path / "m.onnx")
    with pytest.raises(Exception, match="rank"):  # OpenVINO raises untyped errors
        ov.convert_model(str(path))


def test_openvino_build_specializes_the_if_and_matches_the_source(tmp_path: Path) -> None:
    path = rank_if_model(tmp_path / "m.onnx")
    data = tmp_path / "check.npz"
    np.savez(data, x=np.random.default_rng(2).standard_normal((4, 4, 1)).astype(np.float32))
    result = build_model(path, "openvino:cpu-fp32", tmp_path / "m.duh", check_data=data)
    assert result.output is not None
    manifest = json.loads((result.output / "manifest.json").read_text())
    notes = manifest["build"]["compile_notes"]
    assert any("made Squeeze" in note for note in notes), notes


def _cond_if_model(path: Path) -> Path:
    """x[1,4] -> If(sum(x) > 0 as [1,1]: If(max(x) > 1 as [1,1]: 2x, else: -x), else: x).

    Both conditions keep the [1, 1] of a reduction with keepdims, as PyTorch exports them; the
    inner If sits in a branch, its condition computed there.
    """

    def cond(reduce: str, source: str, bound: str, out: str) -> list[onnx.NodeProto]:
        return [
            helper.make_node(reduce, [source], [out + "_r"], keepdims=1),
            helper.make_node("Greater", [out + "_r", bound], [out]),
        ]

    def branch(name: str, nodes: list[onnx.NodeProto], out: str) -> onnx.GraphProto:
        info = helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 4])
        return helper.make_graph(nodes, name, [], [info])

    inner = helper.make_node(
        "If", ["c2"], ["inner"],
        then_branch=branch("twice", [helper.make_node("Add", ["x", "x"], ["d"])], "d"),
        else_branch=branch("neg", [helper.make_node("Neg", ["x"], ["n"])], "n"),
    )  # fmt: skip
    outer = helper.make_node(
        "If", ["c1"], ["y"],
        then_branch=branch("then", [*cond("ReduceMax", "x", "one", "c2"), inner], "inner"),
        else_branch=branch("else", [helper.make_node("Identity", ["x"], ["kept"])], "kept"),
    )  # fmt: skip
    graph = helper.make_graph(
        [*cond("ReduceSum", "x", "zero", "c1"), outer],
        "cond_if",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [
            numpy_helper.from_array(np.array(0, np.float32), "zero"),
            numpy_helper.from_array(np.array(1, np.float32), "one"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.save(model, str(path))
    return path


_BRANCHES = np.array([[[-1, -1, 0, 0]], [[0.5, 0.5, 0, 0]], [[3, 0, 0, 0]]], np.float32)


def test_if_conditions_of_shape_1x1_become_scalars_and_compute_the_same(tmp_path: Path) -> None:
    path = _cond_if_model(tmp_path / "m.onnx")
    special, count = scalar_if_conditions(onnx.load(str(path)))
    assert count == 2
    onnx.checker.check_model(special, full_check=True)
    assert scalar_if_conditions(special)[1] == 0
    sessions = [
        ort.InferenceSession(m, providers=["CPUExecutionProvider"])
        for m in (str(path), special.SerializeToString())
    ]
    for x in _BRANCHES:  # else; then, inner else; then, inner then
        runs = [s.run(None, {"x": x})[0] for s in sessions]
        np.testing.assert_array_equal(runs[0], runs[1])


def test_openvino_refuses_an_if_condition_of_shape_1x1(tmp_path: Path) -> None:
    path = _cond_if_model(tmp_path / "m.onnx")
    with pytest.raises(Exception, match="Rank of If condition"):  # OpenVINO's untyped errors
        ov.convert_model(str(path))


def test_openvino_build_reshapes_if_conditions_and_matches_the_source(tmp_path: Path) -> None:
    path = _cond_if_model(tmp_path / "m.onnx")
    data = tmp_path / "check.npz"
    np.savez(data, x=_BRANCHES)
    result = build_model(path, "openvino:cpu-fp32", tmp_path / "m.duh", check_data=data)
    assert result.manifest is not None and result.manifest.checks["passed"]
    notes = result.manifest.build["compile_notes"]
    assert any("reshaped to scalars" in note and note.endswith(": 2") for note in notes), notes


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


def _passthrough(path: Path) -> Path:
    """y = Relu(x), and x itself and a constant K as outputs too."""
    outputs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
        for n, s in (("y", ["n", 4]), ("x", ["n", 4]), ("K", [3]))
    ]
    return save(
        path, [helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])], outputs,
        [numpy_helper.from_array(np.array([1.0, -2.0, 3.0], np.float32), "K")],
    )  # fmt: skip


def test_outputs_that_are_inputs_or_weights_become_identities_of_fresh_names(
    tmp_path: Path,
) -> None:
    model = onnx.load(str(_passthrough(tmp_path / "p.onnx")))
    distinct, renamed = distinct_outputs(model)
    assert renamed == {"x": "x/output", "K": "K/output"}
    assert [o.name for o in distinct.graph.output] == ["y", "x/output", "K/output"]
    onnx.checker.check_model(distinct)
    assert distinct_outputs(distinct) == (distinct, {})


@pytest.mark.parametrize("target", ["openvino:cpu-fp32", "openvino:cpu-int8"])
def test_an_output_that_is_an_input_or_a_weight_builds_for_openvino(
    tmp_path: Path, target: str
) -> None:
    result = build_model(
        _passthrough(tmp_path / "p.onnx"),
        target,
        tmp_path / "p.duh",
        calib="synthetic" if target.endswith("int8") else None,
    )
    assert result.manifest is not None and result.manifest.checks["passed"]
    x = np.array([[-1.0, 0.5, 2.0, -3.0]], np.float32)
    with duh.load(tmp_path / "p.duh") as session:
        got = session.run({"x": x})
    np.testing.assert_array_equal(got["x"], x)
    np.testing.assert_array_equal(got["K"], [1.0, -2.0, 3.0])
    np.testing.assert_allclose(got["y"], np.maximum(x, 0), atol=0.05)
