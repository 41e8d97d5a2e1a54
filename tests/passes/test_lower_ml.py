"""``lower-ml``: scikit-learn models (skl2onnx) lowered to standard ops match ONNX Runtime's
native ai.onnx.ml operators on real data, and run on OpenVINO, which has no ai.onnx.ml."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from duh.errors import PassError
from duh.passes import PassContext, create_pass

pytest.importorskip("skl2onnx")
from skl2onnx import to_onnx
from sklearn import datasets, ensemble, linear_model

CTX = PassContext("openvino", "cpu", "fp32", Path("."))


def _convert(est: Any, x: np.ndarray, classifier: bool) -> onnx.ModelProto:
    options = {id(est): {"zipmap": False}} if classifier else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return to_onnx(est, x[:1], options=options, target_opset={"": 17, "ai.onnx.ml": 3})


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [np.asarray(v) for v in s.run(None, {s.get_inputs()[0].name: x})]


def _lowered(model: onnx.ModelProto) -> onnx.ModelProto:
    result = create_pass("lower-ml").run(model, CTX)
    assert result.changed
    assert not any(n.domain == "ai.onnx.ml" for n in result.model.graph.node)
    return result.model


CLASSIFIERS = [
    ensemble.RandomForestClassifier(20, max_depth=6, random_state=0),
    ensemble.GradientBoostingClassifier(n_estimators=20, random_state=0),
    ensemble.ExtraTreesClassifier(20, max_depth=6, random_state=0),
    linear_model.LogisticRegression(max_iter=500),
]


@pytest.mark.parametrize("data", ["iris", "breast_cancer"])
@pytest.mark.parametrize("est", CLASSIFIERS, ids=lambda e: type(e).__name__)
def test_classifiers_match_the_native_operators(est: Any, data: str) -> None:
    ds = getattr(datasets, f"load_{data}")()
    x, y = ds.data.astype(np.float32), ds.target
    model = _convert(est.fit(x[::2], y[::2]), x, classifier=True)
    (label, prob), (got_label, got_prob) = _run(model, x[1::2]), _run(_lowered(model), x[1::2])
    np.testing.assert_allclose(got_prob, prob, rtol=1e-5, atol=1e-6)
    # a forest's vote of exactly 0.5 is decided by the order of a float sum: only there may
    # the labels part
    differ = label != got_label
    assert np.all(np.abs(prob[differ] - 0.5) < 1e-6), (label[differ], prob[differ])
    assert differ.mean() <= 0.01


@pytest.mark.parametrize(
    "est",
    [
        ensemble.RandomForestRegressor(20, max_depth=6, random_state=0),
        ensemble.GradientBoostingRegressor(n_estimators=20, random_state=0),
        ensemble.ExtraTreesRegressor(10, random_state=0),
        linear_model.LinearRegression(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_regressors_match_the_native_operators(est: Any) -> None:
    ds = datasets.load_diabetes()
    x = ds.data.astype(np.float32)
    model = _convert(est.fit(x[::2], ds.target[::2]), x, classifier=False)
    want, got = _run(model, x[1::2])[0], _run(_lowered(model), x[1::2])[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_missing_values_take_the_nodes_track() -> None:
    x = datasets.load_iris().data.astype(np.float32)
    est = ensemble.HistGradientBoostingClassifier(max_iter=10, random_state=0)
    x_nan = x.copy()
    x_nan[::7, 2] = np.nan
    model = _convert(est.fit(x_nan, datasets.load_iris().target), x, classifier=True)
    (label, prob), (got_label, got_prob) = _run(model, x_nan), _run(_lowered(model), x_nan)
    np.testing.assert_array_equal(got_label, label)
    np.testing.assert_allclose(got_prob, prob, rtol=1e-5, atol=1e-6)


def test_a_form_it_cannot_reproduce_is_one_pass_error() -> None:
    x = datasets.load_iris().data.astype(np.float32)
    est = linear_model.LogisticRegression(max_iter=500).fit(x, datasets.load_iris().target)
    model = _convert(est, x, classifier=True)
    node = next(n for n in model.graph.node if n.op_type == "LinearClassifier")
    for a in node.attribute:
        if a.name == "coefficients":
            del a.floats[-1]
    with pytest.raises(PassError, match="cannot be lowered.*openvino has no ai.onnx.ml"):
        create_pass("lower-ml").run(model, CTX)


def test_surplus_coefficients_are_read_as_onnx_runtime_reads_them() -> None:
    # A model trained on 4 columns that declares a 2-feature input (ONNX Runtime's own
    # logreg_iris sample): ONNX Runtime reads the first C x F weights with the input's stride.
    x = datasets.load_iris().data.astype(np.float32)
    est = linear_model.LogisticRegression(max_iter=500).fit(x, datasets.load_iris().target)
    model = _convert(est, x, classifier=True)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[1].dim_value = 2
    result = create_pass("lower-ml").run(model, CTX)
    assert any("read as ONNX Runtime reads them" in n for n in result.notes), result.notes
    (label, prob), (got_label, got_prob) = _run(model, x[:, :2]), _run(result.model, x[:, :2])
    np.testing.assert_array_equal(got_label, label)
    np.testing.assert_allclose(got_prob, prob, rtol=1e-5, atol=1e-6)


def test_the_lowered_forest_runs_on_openvino(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    import duh

    ds = datasets.load_breast_cancer()
    x, y = ds.data.astype(np.float32), ds.target
    est = ensemble.GradientBoostingClassifier(n_estimators=20, random_state=0).fit(x[::2], y[::2])
    path = tmp_path / "gb.onnx"
    onnx.save(_convert(est, x, classifier=True), str(path))
    result = duh.build(path, "openvino:cpu-fp32", tmp_path / "gb.duh", cache=False)
    assert result.manifest is not None and result.manifest.checks["passed"]
    label, prob = _run(onnx.load(str(path)), x[1::2])
    got = duh.load(tmp_path / "gb.duh").run({"X": x[1::2]})
    np.testing.assert_array_equal(got["label"], label)
    np.testing.assert_allclose(got["probabilities"], prob, rtol=1e-5, atol=1e-6)


def _tree_ensemble_ml5(est: Any, features: int) -> onnx.ModelProto:
    """A random forest as ai.onnx.ml 5's TreeEnsemble, written from scikit-learn's own trees
    (double input, as LightGBM exports write it)."""
    splits, feats, trues, falses, true_leaf, false_leaf, roots = [], [], [], [], [], [], []
    leaf_weights: list[float] = []
    for tree in (e.tree_ for e in est.estimators_):
        internal = {n: None for n in range(tree.node_count) if tree.children_left[n] >= 0}
        leaves = [n for n in range(tree.node_count) if tree.children_left[n] < 0]
        at = {n: len(feats) + i for i, n in enumerate(internal)}
        leaf_at = {n: len(leaf_weights) + i for i, n in enumerate(leaves)}
        roots.append(at[0])
        for n in internal:
            feats.append(int(tree.feature[n]))
            splits.append(float(tree.threshold[n]))
            for child, ids, flags in (
                (tree.children_left[n], trues, true_leaf),
                (tree.children_right[n], falses, false_leaf),
            ):
                flags.append(int(child in leaf_at))
                ids.append(leaf_at[child] if child in leaf_at else at[child])
        leaf_weights.extend(float(tree.value[n].ravel()[0]) for n in leaves)
    node = helper.make_node(
        "TreeEnsemble", ["X"], ["Y"], domain="ai.onnx.ml", aggregate_function=0,
        n_targets=1, post_transform=0, tree_roots=roots, nodes_featureids=feats,
        nodes_truenodeids=trues, nodes_falsenodeids=falses, nodes_trueleafs=true_leaf,
        nodes_falseleafs=false_leaf, leaf_targetids=[0] * len(leaf_weights),
        nodes_modes=numpy_helper.from_array(np.zeros(len(feats), np.uint8)),
        nodes_splits=numpy_helper.from_array(np.array(splits, np.float64)),
        leaf_weights=numpy_helper.from_array(np.array(leaf_weights, np.float64)),
    )  # fmt: skip
    graph = helper.make_graph(
        [node], "forest5",
        [helper.make_tensor_value_info("X", onnx.TensorProto.DOUBLE, ["n", features])],
        [helper.make_tensor_value_info("Y", onnx.TensorProto.DOUBLE, ["n", 1])],
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("ai.onnx.ml", 5)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=10)


def test_ml5_tree_ensemble_lowers_and_matches_onnx_runtime(tmp_path: Path) -> None:
    x, y = datasets.load_diabetes(return_X_y=True)
    x = x.astype(np.float32).astype(np.float64)  # scikit-learn's trees compare in float32
    est = ensemble.RandomForestRegressor(8, max_depth=5, random_state=0).fit(x[::2], y[::2])
    model = _tree_ensemble_ml5(est, x.shape[1])
    onnx.checker.check_model(model)
    held = x[1::2]
    [native] = _run(model, held)
    np.testing.assert_allclose(native.ravel(), est.predict(held), rtol=1e-9)  # the fixture
    lowered = _lowered(model)
    [got] = _run(lowered, held)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, native, rtol=1e-5, atol=1e-4)
    pytest.importorskip("openvino")
    import duh

    onnx.save(model, str(tmp_path / "forest5.onnx"))
    result = duh.build(
        tmp_path / "forest5.onnx", "openvino:cpu-fp32", tmp_path / "f.duh", cache=False
    )
    assert result.manifest is not None and result.manifest.checks["passed"]
    with duh.load(tmp_path / "f.duh") as session:
        np.testing.assert_allclose(session.run({"X": held})["Y"], native, rtol=1e-5, atol=1e-4)


def _preprocessed(missing: float) -> tuple[onnx.ModelProto, np.ndarray]:
    """A scikit-learn pipeline: imputer, scaler, binarized copy of the features, regression."""
    from sklearn import impute, pipeline, preprocessing

    ds = datasets.load_diabetes()
    x = ds.data.astype(np.float32)
    x[::7, 2] = missing  # holes the imputer fills
    features = pipeline.make_union(
        preprocessing.StandardScaler(), preprocessing.Binarizer(threshold=0.01)
    )
    est = pipeline.make_pipeline(
        impute.SimpleImputer(missing_values=missing), features, linear_model.Ridge()
    )
    return _convert(est.fit(x[::2], ds.target[::2]), x, classifier=False), x[1::2]


@pytest.mark.parametrize("missing", [np.nan, -1.0], ids=["nan", "minus-one"])
def test_a_pipelines_imputer_scaler_and_binarizer_match_the_native_operators(
    missing: float,
) -> None:
    model, x = _preprocessed(missing)
    ops = {n.op_type for n in model.graph.node if n.domain == "ai.onnx.ml"}
    assert {"Imputer", "Scaler", "Binarizer"} <= ops, ops
    (want,), (got,) = _run(model, x), _run(_lowered(model), x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_a_scaled_pipeline_builds_for_openvino(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    import duh

    model, x = _preprocessed(np.nan)
    path = tmp_path / "pipe.onnx"
    onnx.save(model, str(path))
    result = duh.build(path, "openvino:cpu-fp32", tmp_path / "pipe.duh", cache=False)
    assert result.manifest is not None and result.manifest.checks["passed"]
    (want,) = _run(model, x)
    got = duh.load(tmp_path / "pipe.duh").run({"X": x})
    np.testing.assert_allclose(next(iter(got.values())), want, rtol=1e-5, atol=1e-4)
