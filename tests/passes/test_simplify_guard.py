"""The simplify pass keeps the input where onnxsim's rewrite changes what the model computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from duh.passes import PassContext, create_pass
from duh.passes.simplify import changed_outputs
from tests.passes._models import make_model


def _ctx(tmp_path: Path) -> PassContext:
    return PassContext("onnxruntime", "cpu", "fp32", tmp_path)


def _outputs(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def _depth_of_conv_model() -> onnx.ModelProto:
    """RivaGAN's encoder in small (opset 10): a Conv over frame[N, 3, 1, H, W] with a [1, 11, 11]
    kernel, and Unsqueeze(Gather(Shape(conv), 2)), its depth, as a second output. onnxsim 0.8
    folds that depth to a constant other than 1 (RivaGAN's Concat then fails on 11 against 1)."""
    w = np.random.default_rng(0).standard_normal((2, 3, 1, 11, 11)).astype(np.float32) / 20
    return make_model(
        [
            helper.make_node(
                "Conv", ["frame", "w"], ["y"], kernel_shape=[1, 11, 11], pads=[0, 5, 5, 0, 5, 5]
            ),
            helper.make_node("Shape", ["y"], ["shape"]),
            helper.make_node(
                "Constant", [], ["two"], value=numpy_helper.from_array(np.array(2, np.int64))
            ),
            helper.make_node("Gather", ["shape", "two"], ["d"], axis=0),
            helper.make_node("Unsqueeze", ["d"], ["depth"], axes=[0]),
        ],
        [helper.make_tensor_value_info("frame", TensorProto.FLOAT, ["batch", 3, 1, "h", "w"])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2, 1, "h", "w"]),
            helper.make_tensor_value_info("depth", TensorProto.INT64, [1]),
        ],
        [numpy_helper.from_array(w, "w")],
        opset=10,
    )


def _affine_model(bias: float = 1.0) -> onnx.ModelProto:
    """y = x * 2 + bias over x[n, 4]."""
    return make_model(
        [helper.make_node("Mul", ["x", "two"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [
            numpy_helper.from_array(np.array(2.0, np.float32), "two"),
            numpy_helper.from_array(np.full(4, bias, np.float32), "b"),
        ],
    )


def test_simplify_keeps_the_model_where_onnxsim_folds_a_shape_wrongly(tmp_path: Path) -> None:
    import onnxsim

    model = _depth_of_conv_model()
    feed = {"frame": np.random.default_rng(1).standard_normal((1, 3, 1, 16, 16), np.float32)}
    want = _outputs(model, feed)
    assert want[1].tolist() == [1]
    raw, _ = onnxsim.simplify(model, check_n=0)
    onnxsim_is_wrong = _outputs(raw, feed)[1].tolist() != [1]

    result = create_pass("simplify").run(model, _ctx(tmp_path))

    got = _outputs(result.model, feed)
    assert got[1].tolist() == [1]
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
    # Where onnxsim (a later release) folds it right, its result is kept with no note.
    assert any("changed the model's outputs" in n for n in result.notes) == onnxsim_is_wrong
    assert any("output 'depth'" in n for n in result.notes) == onnxsim_is_wrong


def test_changed_outputs_names_the_output_that_differs() -> None:
    found = changed_outputs(_affine_model(1.0), _affine_model(1.5))
    assert found is not None and "output 'y' differs by up to 0.5" in found


def test_changed_outputs_accepts_fp32_rounding() -> None:
    assert changed_outputs(_affine_model(1.0), _affine_model(1.0 + 1e-6)) is None


def test_changed_outputs_reports_a_rewrite_that_fails_to_run() -> None:
    broken = _affine_model()
    broken.graph.initializer[1].CopyFrom(numpy_helper.from_array(np.ones(3, np.float32), "b"))
    found = changed_outputs(_affine_model(), broken)
    assert found is not None and found.startswith("it fails to run")


def _reshaped_model(bias: float) -> onnx.ModelProto:
    """x[n, t] reshaped to [1, 3, 4] plus ``bias``: it runs only where n * t == 12."""
    return make_model(
        [
            helper.make_node("Reshape", ["x", "s"], ["r"]),
            helper.make_node("Add", ["r", "b"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "t"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4])],
        [
            numpy_helper.from_array(np.array([1, 3, 4], np.int64), "s"),
            numpy_helper.from_array(np.array(bias, np.float32), "b"),
        ],
    )


def test_changed_outputs_keeps_the_rewrite_where_the_original_cannot_run() -> None:
    # Synthetic x is [1, 32]: the original fails too, so nothing speaks against the rewrite.
    assert changed_outputs(_reshaped_model(0.0), _reshaped_model(5.0)) is None


def test_changed_outputs_runs_on_the_shapes_the_build_fixes() -> None:
    found = changed_outputs(_reshaped_model(0.0), _reshaped_model(5.0), {"x": (1, 12)})
    assert found is not None and "output 'y'" in found
