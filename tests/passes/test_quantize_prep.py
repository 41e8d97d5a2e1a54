"""Two Convs sharing one bias initializer (as tf2onnx writes them) quantize on both engines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import duh
from duh.passes._quantize_prep import unshare_biases


def _shared_bias_model(path: Path) -> Path:
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(0.1 * rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "bias"),
    ]
    nodes = [
        # tf2onnx names tensors after one another: ONNX Runtime's quantizer names the bias
        # copy it makes for a second Conv bias + "0" (+ "1", ...) unchecked, here a taken name
        helper.make_node("Conv", ["x", "w1", "bias"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "w2", "bias"], ["bias0"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["a", "bias0"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "shared", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_a_shared_bias_gets_one_copy_per_node(tmp_path: Path) -> None:
    model = onnx.load(str(_shared_bias_model(tmp_path / "m.onnx")))
    out, copies = unshare_biases(model)
    assert copies == 1
    assert len({n.input[2] for n in out.graph.node if n.op_type == "Conv"}) == 2
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)
    run = lambda m: ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]  # noqa: E731
    np.testing.assert_array_equal(run(out), run(model))
    assert unshare_biases(out)[1] == 0


@pytest.mark.parametrize("target", ["onnxruntime:cpu-int8", "openvino:cpu-int8"])
def test_convs_sharing_a_bias_build_for_int8(tmp_path: Path, target: str) -> None:
    if target.startswith("openvino"):
        pytest.importorskip("openvino")
    path = _shared_bias_model(tmp_path / "m.onnx")
    calib = tmp_path / "calib.npz"
    np.savez(
        calib, x=np.random.default_rng(2).standard_normal((16, 1, 3, 16, 16)).astype(np.float32)
    )
    result = duh.build(path, target, tmp_path / "m.duh", calib=str(calib), cache=False)
    assert result.manifest is not None and result.manifest.checks["passed"] is True


def test_a_forest_builds_for_openvino_int8_with_its_path_counts_in_float(tmp_path: Path) -> None:
    # lower-ml counts each leaf's path turns with a MatMul tested by Equal: quantized, the
    # count is never exactly equal and no leaf is reached; it stays float.
    pytest.importorskip("openvino")
    pytest.importorskip("skl2onnx")
    import warnings

    from skl2onnx import to_onnx
    from sklearn import datasets, ensemble

    from duh.passes._quantize_prep import exact_comparison_feeders

    ds = datasets.load_breast_cancer()
    x, y = ds.data.astype(np.float32), ds.target
    est = ensemble.RandomForestRegressor(10, max_depth=5, random_state=0).fit(x[::2], y[::2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = to_onnx(est, x[:1], target_opset={"": 17, "ai.onnx.ml": 3})
    onnx.save(model, str(tmp_path / "forest.onnx"))
    np.savez(tmp_path / "calib.npz", X=x[::2][:64, None])
    np.savez(tmp_path / "check.npz", X=x[1::2][:32, None])
    result = duh.build(
        tmp_path / "forest.onnx", "openvino:cpu-int8", tmp_path / "f.duh",
        calib=str(tmp_path / "calib.npz"), check_data=tmp_path / "check.npz", cache=False,
    )  # fmt: skip
    assert result.manifest is not None and result.manifest.checks["passed"] is True
    # the lowered forest has two MatMuls: the leaf values' is quantized, the path count's not
    # (dequantized, acc x s_a x s_w is not always the exact integer the Equal tests for)
    [notes] = [p["notes"] for p in result.manifest.passes if p["name"] == "quantize"]
    assert "1 quantized weight/bias tensors" in notes[0], notes
    assert exact_comparison_feeders(onnx.load(str(tmp_path / "forest.onnx"))) == set()
