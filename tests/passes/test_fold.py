from __future__ import annotations

from pathlib import Path

import numpy as np

from duh.passes import create_pass
from tests.passes._models import ctx, paddle_like_model, run_ort


def test_constants_become_initializers_and_shape_arithmetic_folds(tmp_path: Path) -> None:
    model = paddle_like_model()
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 6)).astype(np.float32)
    result = create_pass("fold-constants").run(model, ctx(tmp_path))
    ops = [n.op_type for n in result.model.graph.node]
    assert result.changed
    assert "Constant" not in ops and "Shape" not in ops and "Concat" not in ops
    assert ops == ["Conv", "Mul", "Reshape"]
    inits = {i.name: i for i in result.model.graph.initializer}
    assert {"w", "b", "s", "target"} <= set(inits)
    np.testing.assert_array_equal(np.frombuffer(inits["target"].raw_data, np.int64), [2, -1])
    assert any("Constant nodes -> initializers" in n for n in result.notes)
    (want,), (got,) = run_ort(model, {"x": x}), run_ort(result.model, {"x": x})
    assert got.shape == want.shape == (2, 4 * 6 * 6)
    np.testing.assert_array_equal(got, want)


def test_dynamic_shapes_are_left_alone(tmp_path: Path) -> None:
    model = paddle_like_model()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    result = create_pass("fold-constants").run(model, ctx(tmp_path))
    ops = [n.op_type for n in result.model.graph.node]
    assert "Shape" in ops and "Constant" not in ops
    x = np.ones((5, 3, 6, 6), np.float32)
    assert run_ort(result.model, {"x": x})[0].shape == (5, 144)


def test_quantized_weights_are_not_folded_back_to_float(tmp_path: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper

    from tests.passes._models import make_model

    q = numpy_helper.from_array(np.arange(-8, 8, dtype=np.int8).reshape(4, 4), "wq")
    s = numpy_helper.from_array(np.array(0.1, np.float32), "ws")
    nodes = [
        helper.make_node("DequantizeLinear", ["wq", "ws"], ["w"]),
        helper.make_node("MatMul", ["x", "w"], ["y"]),
    ]
    model = make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [q, s],
    )
    result = create_pass("fold-constants").run(model, ctx(tmp_path))
    assert [n.op_type for n in result.model.graph.node] == ["DequantizeLinear", "MatMul"]


def test_folding_never_expands_weights(tmp_path: Path) -> None:
    from onnx import TensorProto, helper, numpy_helper

    from tests.passes._models import make_model

    half = numpy_helper.from_array(np.ones((256, 256), np.float16), "w16")
    nodes = [
        helper.make_node("Cast", ["w16"], ["w"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["x", "w"], ["y"]),
    ]
    model = make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256])],
        [half],
    )
    result = create_pass("fold-constants").run(model, ctx(tmp_path))
    assert [n.op_type for n in result.model.graph.node] == ["Cast", "MatMul"]
