from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from duh.compiler.pipeline import PassManager
from duh.errors import ConfigError
from duh.passes import PassContext, create_pass, pass_names
from duh.targets import PassSpec


def _ctx(tmp_path: Path) -> PassContext:
    return PassContext("onnxruntime", "cpu", "fp32", tmp_path)


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _model_with_waste() -> onnx.ModelProto:
    """x·W + (c1 + c2), an Identity, and a dead Sigmoid branch."""
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(3, 4) / 10, "w")
    c1 = numpy_helper.from_array(np.ones(4, np.float32), "c1")
    c2 = numpy_helper.from_array(np.full(4, 2.0, np.float32), "c2")
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["c1", "c2"], ["c"]),
            helper.make_node("MatMul", ["x", "w"], ["m"]),
            helper.make_node("Identity", ["m"], ["m_id"]),
            helper.make_node("Add", ["m_id", "c"], ["y"]),
            helper.make_node("Sigmoid", ["m"], ["dead"]),
        ],
        "waste",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [w, c1, c2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_builtin_passes_are_registered() -> None:
    assert {"simplify", "cleanup"} <= set(pass_names())


def test_cleanup_drops_identity_and_dead_nodes_keeping_numbers(tmp_path: Path) -> None:
    model = _model_with_waste()
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    result = create_pass("cleanup").run(model, _ctx(tmp_path))
    ops = [n.op_type for n in result.model.graph.node]
    assert result.changed and "Identity" not in ops and "Sigmoid" not in ops
    np.testing.assert_allclose(_run(result.model, x), _run(model, x), rtol=1e-6)


def test_simplify_folds_constants_keeping_numbers(tmp_path: Path) -> None:
    model = _model_with_waste()
    x = np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32)
    result = create_pass("simplify").run(model, _ctx(tmp_path))
    assert result.changed
    assert len(result.model.graph.node) == 2  # MatMul + Add: the constant Add is folded
    assert result.model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "n"
    np.testing.assert_allclose(_run(result.model, x), _run(model, x), rtol=1e-6)


def test_simplify_keeps_the_model_when_onnxsim_fails(tmp_path: Path) -> None:
    # A graph output no node produces: onnxsim raises on it.
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["z"])],
        "broken",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [7])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    result = create_pass("simplify").run(model, _ctx(tmp_path))
    assert not result.changed and result.model is model
    assert "onnxsim failed" in result.notes[0] and "is not an output of any node" in result.notes[0]


def test_pass_manager_records_counts(tmp_path: Path) -> None:
    manager = PassManager([PassSpec("cleanup"), PassSpec("simplify", {"check_n": 0})])
    model, records = manager.run(_model_with_waste(), _ctx(tmp_path))
    assert [r.name for r in records] == ["cleanup", "simplify"]
    assert records[0].nodes_before == 5 and records[0].nodes_after == 3
    assert records[-1].nodes_after == len(model.graph.node)
    assert manager.describe()[1] == {
        "name": "simplify",
        "config": {
            "skip_fuse_bn": False,
            "skip_constant_folding": False,
            "attention_patterns": "auto",
            "check_n": 0,
        },
    }


def test_unknown_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="has no option 'speed'"):
        create_pass("cleanup", {"speed": 11})
