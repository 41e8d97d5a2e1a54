from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from duh.calibration import CalibrationSet, calibrate, float_tensors
from duh.errors import CalibrationError


def _model() -> onnx.ModelProto:
    """y = Relu(x * 2)."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["m"]), helper.make_node("Relu", ["m"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1000])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1000])],
        [numpy_helper.from_array(np.array(2.0, np.float32), "two")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _data(outlier: float = 50.0, count: int = 20) -> CalibrationSet:
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.uniform(-1, 1, (1, 1000)).astype(np.float32)} for _ in range(count)]
    feeds[3]["x"][0, 7] = outlier
    return CalibrationSet(tuple(feeds), (), "test", f"digest-{outlier}-{count}")


def test_float_tensors_are_the_activations() -> None:
    assert float_tensors(_model()) == ["x", "m", "y"]


def test_minmax_is_the_exact_range() -> None:
    data = _data()
    ranges = calibrate(_model(), data, "minmax").ranges
    xs = np.concatenate([f["x"] for f in data.feeds])
    assert ranges["x"] == (float(xs.min()), float(xs.max()))
    assert ranges["m"] == (2 * float(xs.min()), 100.0)
    assert ranges["y"] == (0.0, 100.0)


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_histogram_methods_clip_a_lone_outlier(method: str) -> None:
    ranges = calibrate(_model(), _data(), method, percentile=99.99).ranges
    low, high = ranges["m"]
    assert -2.1 <= low <= -1.5 and 1.5 <= high <= 10.0  # not 100: the outlier is one value in 20000
    assert ranges["y"][0] == 0.0 and 1.5 <= ranges["y"][1] <= 10.0


def test_percentile_100_keeps_everything() -> None:
    ranges = calibrate(_model(), _data(), "percentile", percentile=100.0).ranges
    assert ranges["y"][1] >= 99.9


def test_results_are_cached_by_model_data_and_method(tmp_path: Path) -> None:
    first = calibrate(_model(), _data(), "entropy", cache_dir=tmp_path)
    again = calibrate(_model(), _data(), "entropy", cache_dir=tmp_path)
    assert (
        not first.cached
        and again.cached
        and again.ranges == first.ranges
        and again.key == first.key
    )
    assert not calibrate(_model(), _data(), "minmax", cache_dir=tmp_path).cached
    assert not calibrate(_model(), _data(outlier=60.0), "entropy", cache_dir=tmp_path).cached
    other = _model()
    other.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.array(3.0, np.float32), "two"))
    assert not calibrate(other, _data(), "entropy", cache_dir=tmp_path).cached
    assert len(list(tmp_path.glob("*.json"))) == 4


def test_bad_method_and_empty_data() -> None:
    with pytest.raises(CalibrationError, match="unknown calibration method 'kl'"):
        calibrate(_model(), _data(), "kl")
    with pytest.raises(CalibrationError, match="no samples left"):
        calibrate(_model(), CalibrationSet((), (), "empty", "d"), "minmax")
