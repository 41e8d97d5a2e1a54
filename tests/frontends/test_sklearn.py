"""scikit-learn, XGBoost and LightGBM models into duh: built from .skops (and trusted pickles),
checked against the estimator's own predict / predict_proba on held-out data."""

from __future__ import annotations

import json
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

import duh
from duh.cli import app
from duh.errors import ConfigError, MissingDependencyError, ModelError
from duh.frontends import FrontendOptions, export, find

sklearn = pytest.importorskip("sklearn")
pytest.importorskip("skl2onnx", reason="duh[sklearn] is not installed")
sio = pytest.importorskip("skops.io", reason="duh[sklearn] is not installed (skops)")

from sklearn.base import BaseEstimator, TransformerMixin  # noqa: E402
from sklearn.datasets import load_breast_cancer  # noqa: E402
from sklearn.ensemble import GradientBoostingClassifier  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer, StandardScaler  # noqa: E402

runner = CliRunner()


def _double(x: np.ndarray) -> np.ndarray:
    return x * 2.0


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Breast-cancer features (float32): 400 rows to train and calibrate on, 169 held out."""
    x, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order].astype(np.float32), y[order]
    root = tmp_path_factory.mktemp("sklearn-data")
    np.savez(root / "calib.npz", input=x[:200])
    np.savez(root / "check.npz", input=x[400:])
    return {
        "x_train": x[:400], "y_train": y[:400], "x_test": x[400:], "y_test": y[400:],
        "calib": root / "calib.npz", "check": root / "check.npz",
    }  # fmt: skip


def _fit(kind: str, data: dict[str, Any]) -> Any:
    if kind == "pipeline":
        model = make_pipeline(
            StandardScaler(), GradientBoostingClassifier(n_estimators=40, random_state=0)
        )
    elif kind == "xgboost":
        xgboost = pytest.importorskip("xgboost")
        model = xgboost.XGBClassifier(n_estimators=40, max_depth=3, random_state=0, n_jobs=1)
    else:
        lightgbm = pytest.importorskip("lightgbm")
        model = lightgbm.LGBMClassifier(n_estimators=40, random_state=0, n_jobs=1, verbose=-1)
    return model.fit(data["x_train"], data["y_train"])


def _run_artifact(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    return duh.load(path).run({"input": x})


def _build_both(source: Path, model: Any, data: dict[str, Any], tmp_path: Path) -> None:
    """Build cpu and cpu-int8; fp32 equals the estimator, INT8 agrees on >= 99% and stays within
    one accuracy point. Tree ensembles (ai.onnx.ml) have no INT8 kernels: on ONNX Runtime the
    quantizer leaves them in float, so the INT8 artifact carries no Q/DQ and gives the fp32
    numbers."""
    x, y = data["x_test"], data["y_test"]
    labels, proba = model.predict(x), model.predict_proba(x)
    outs = {}
    for target in ("cpu", "cpu-int8"):
        out = tmp_path / f"{target}.duh"
        duh.build(
            source, target=target, output=out, calib=data["calib"], check_data=data["check"],
            cache=False,
        )  # fmt: skip
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["source"]["frontend"]["frontend"] == "sklearn"
        assert manifest["source"]["frontend"]["format"] == "skops"
        assert manifest["checks"]["framework"]["passed"] is True
        outs[target] = (_run_artifact(out, x), out)
    fp32, _ = outs["cpu"]
    np.testing.assert_array_equal(fp32["label"], labels)
    np.testing.assert_allclose(fp32["probabilities"], proba, atol=1e-4, rtol=1e-3)  # duh's fp32 bar

    int8, int8_dir = outs["cpu-int8"]
    assert np.mean(int8["label"] == labels) >= 0.99
    accuracy = {k: float(np.mean(v[0]["label"] == y)) for k, v in outs.items()}
    assert abs(accuracy["cpu-int8"] - float(np.mean(labels == y))) <= 0.01
    if json.loads((int8_dir / "manifest.json").read_text())["engine"] == "onnxruntime":
        # (OpenVINO builds the lowered forest too, where it is measured slower here.)
        graph = onnx.load(int8_dir / "model.onnx").graph
        assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node)
        assert any(n.domain == "ai.onnx.ml" for n in graph.node)
        np.testing.assert_array_equal(int8["probabilities"], fp32["probabilities"])


@pytest.mark.parametrize(
    "kind", ["pipeline", "xgboost", pytest.param("lightgbm", marks=pytest.mark.slow)]
)
def test_skops_model_builds_for_cpu_and_int8_against_the_estimator(
    kind: str, data: dict[str, Any], tmp_path: Path
) -> None:
    model = _fit(kind, data)
    source = tmp_path / f"{kind}.skops"
    sio.dump(model, source)
    _build_both(source, model, data, tmp_path)


def test_export_records_the_estimator_and_references_predict(data: dict[str, Any], tmp_path: Path) -> None:
    model = _fit("pipeline", data)
    source = tmp_path / "m.skops"
    sio.dump(model, source)
    assert find(str(source)) is not None and find(str(source)).name == "sklearn"  # type: ignore[union-attr]
    exported = export(str(source), FrontendOptions(opset=15))
    record = exported.record
    assert record["estimator"] == "Pipeline(StandardScaler, GradientBoostingClassifier)"
    assert record["version"] == sklearn.__version__
    assert record["opset"] <= 15 and record["zipmap"] is False and record["n_features"] == 30
    (inp,) = exported.model.graph.input
    assert inp.name == "input"
    dims = inp.type.tensor_type.shape.dim
    assert not dims[0].HasField("dim_value") and dims[1].dim_value == 30  # dynamic batch
    assert exported.reference is not None
    ref = exported.reference({"input": data["x_test"][:5]})
    np.testing.assert_array_equal(ref["label"], model.predict(data["x_test"][:5]))
    assert ref["probabilities"].dtype == np.float32


def test_pickles_need_trust_code(data: dict[str, Any], tmp_path: Path) -> None:
    model = _fit("pipeline", data)
    joblib = pytest.importorskip("joblib")
    pkl, jl = tmp_path / "m.pkl", tmp_path / "m.joblib"
    pkl.write_bytes(pickle.dumps(model))
    joblib.dump(model, jl)
    for path in (pkl, jl):
        result = runner.invoke(app, ["build", str(path), "-t", "cpu", "-o", str(tmp_path / "o.duh")])
        assert result.exit_code == ConfigError.exit_code, result.stderr
        assert result.stderr.strip().startswith("error:")
        text = " ".join(result.stderr.split())
        assert "runs code from the file" in text and "--trust-code" in text
        assert not (tmp_path / "o.duh").exists()
    exported = export(str(jl), FrontendOptions(trust_code=True))
    assert exported.record["format"] == "joblib" and exported.reference is not None
    out = tmp_path / "trusted.duh"
    result = runner.invoke(
        app, ["build", str(pkl), "-t", "cpu", "--trust-code", "--check-data", str(data["check"]), "-o", str(out)]
    )
    assert result.exit_code == 0, result.stderr
    np.testing.assert_array_equal(_run_artifact(out, data["x_test"])["label"], model.predict(data["x_test"]))


class _Doubler(TransformerMixin, BaseEstimator):
    """A custom transformer, as users write them: no skl2onnx converter."""

    def __init__(self, record_width: bool = False) -> None:
        self.record_width = record_width

    def fit(self, x: np.ndarray, y: Any = None) -> _Doubler:
        if self.record_width:
            self.n_features_in_ = x.shape[1]
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return x * 2


@pytest.mark.parametrize("record_width", [False, True])
def test_a_custom_transformer_is_named_in_one_line(
    data: dict[str, Any], tmp_path: Path, record_width: bool
) -> None:
    from sklearn.linear_model import LogisticRegression

    model = make_pipeline(_Doubler(record_width), LogisticRegression(max_iter=200))
    model.fit(data["x_train"], data["y_train"])
    path = tmp_path / "custom.pkl"
    path.write_bytes(pickle.dumps(model))
    out = tmp_path / "o.duh"
    result = runner.invoke(app, ["build", str(path), "-t", "cpu", "--trust-code", "-o", str(out)])
    assert result.exit_code == ModelError.exit_code, result.stderr
    text = result.stderr.strip()
    assert text.startswith("error:") and "\n" not in text and "Traceback" not in text
    assert "_Doubler" in text  # the step skl2onnx cannot convert, by its class
    if not record_width:
        assert "custom transformer" in text and "update_registered_converter" in text
    assert not out.exists()


def test_skops_file_with_a_python_function_needs_trust_code(data: dict[str, Any], tmp_path: Path) -> None:
    model = make_pipeline(FunctionTransformer(_double), StandardScaler())
    model.fit(data["x_train"])
    source = tmp_path / "fn.skops"
    sio.dump(model, source)
    with pytest.raises(ConfigError, match=r"types that skops does not trust \(.*_double"):
        export(str(source), FrontendOptions())
    # Trusted, it loads; skl2onnx has no converter for an arbitrary Python function.
    with pytest.raises(ModelError, match="skl2onnx cannot convert Pipeline"):
        export(str(source), FrontendOptions(trust_code=True))


def test_truncated_or_foreign_files_get_one_line_and_exit_3(data: dict[str, Any], tmp_path: Path) -> None:
    model = _fit("pipeline", data)
    good = tmp_path / "good.skops"
    sio.dump(model, good)
    truncated = tmp_path / "truncated.skops"
    truncated.write_bytes(good.read_bytes()[:300])
    foreign = tmp_path / "foreign.skops"
    foreign.write_text("not a model\n")
    cut_pickle = tmp_path / "cut.pkl"
    cut_pickle.write_bytes(pickle.dumps(model)[:200])
    cases = [
        ([str(truncated)], "is not a readable .skops file"),
        ([str(foreign)], "is not a readable .skops file"),
        ([str(cut_pickle), "--trust-code"], "is not a readable pickle"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["build", *args, "-t", "cpu", "-o", str(tmp_path / "o.duh")])
        assert result.exit_code == ModelError.exit_code == 3, result.stderr
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        assert lines[0].startswith("error:")
        assert "Traceback" not in result.stderr
        assert message in " ".join(result.stderr.split())
        assert not (tmp_path / "o.duh").exists()


def test_without_skl2onnx_the_error_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "m.skops"
    source.write_bytes(b"PK")
    monkeypatch.setitem(sys.modules, "skl2onnx", None)  # what an environment without it sees
    with pytest.raises(MissingDependencyError, match=r"pip install 'duh\[sklearn\]'"):
        export(str(source), FrontendOptions())


def test_a_torch_zip_pkl_is_left_to_torch_and_a_bare_pickle_is_sklearns(tmp_path: Path) -> None:
    bare = tmp_path / "bare.pkl"
    bare.write_bytes(pickle.dumps({"a": 1}))
    zipped = tmp_path / "zipped.pkl"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"a": 1}))
    assert find(str(bare)).name == "sklearn"  # type: ignore[union-attr]
    assert find(str(zipped)).name == "torch"  # type: ignore[union-attr]
    assert find(str(tmp_path / "m.joblib")).name == "sklearn"  # type: ignore[union-attr]
