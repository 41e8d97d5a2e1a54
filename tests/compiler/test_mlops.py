"""A classifier ending in ZipMap (skl2onnx's default) builds: the sequence<map> output is served as
the probability matrix, its columns' labels in the manifest, equal to ONNX Runtime's ZipMap."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import duh
from duh.compiler._mlops import zipmap_matrix

pytest.importorskip("skl2onnx")


@pytest.fixture(scope="module")
def zipmap_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    iris = load_iris()
    x = iris.data.astype(np.float32)
    est = RandomForestClassifier(10, max_depth=4, random_state=0).fit(x, iris.target)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = to_onnx(est, x[:1], target_opset={"": 17, "ai.onnx.ml": 3})
    assert any(n.op_type == "ZipMap" for n in model.graph.node)
    path = tmp_path_factory.mktemp("zipmap") / "forest.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("target", ["cpu", "openvino:cpu-fp32"])
def test_zipmap_output_is_the_probability_matrix(
    zipmap_model: Path, target: str, tmp_path: Path
) -> None:
    if target.startswith("openvino"):
        pytest.importorskip("openvino")
    out = tmp_path / "forest.duh"
    result = duh.build(zipmap_model, target, out, cache=False)
    assert result.manifest is not None
    labels = [0, 1, 2]
    assert result.manifest.source["output_labels"]["output_probability"]["columns"] == labels
    assert any("was a ZipMap" in w for w in result.warnings)
    x = np.random.default_rng(0).uniform([4, 2, 1, 0], [8, 4.5, 7, 2.5], (40, 4)).astype("f4")
    ref = ort.InferenceSession(str(zipmap_model), providers=["CPUExecutionProvider"])
    want_label, want_maps = ref.run(None, {"X": x})
    got = duh.load(out).run({"X": x})
    np.testing.assert_allclose(
        got["output_probability"], zipmap_matrix(want_maps, labels), rtol=1e-5, atol=1e-6
    )
    assert list(got["output_label"]) == list(want_label)


def test_string_class_labels_come_back_as_str_on_openvino(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    iris = load_iris()
    x = iris.data.astype(np.float32)
    names = np.array(["setosa", "versicolor", "virginica"])[iris.target]
    est = RandomForestClassifier(5, max_depth=3, random_state=0).fit(x, names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx.save(to_onnx(est, x[:1], target_opset={"": 17, "ai.onnx.ml": 3}), tmp_path / "s.onnx")
    result = duh.build(tmp_path / "s.onnx", "openvino:cpu-fp32", tmp_path / "s.duh", cache=False)
    assert result.manifest is not None and result.manifest.checks["passed"]
    got = duh.load(tmp_path / "s.duh").run({"X": x[::10]})["output_label"]
    ref = ort.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"])
    assert got.dtype == object and list(got) == list(ref.run(None, {"X": x[::10]})[0])
