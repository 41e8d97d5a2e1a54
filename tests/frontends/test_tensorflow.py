"""TensorFlow / Keras models into duh: a Keras model trained on scikit-learn's digits, built from
``.keras``, ``.h5`` and a SavedModel directory, checked against Keras' own predictions."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

import duh
from duh.cli import app
from duh.errors import ConfigError, MissingDependencyError, ModelError
from duh.frontends import FrontendOptions, export, find

runner = CliRunner()


def test_without_tensorflow_the_error_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "m.keras"
    source.write_bytes(b"PK")
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # what an environment without TF sees
    with pytest.raises(MissingDependencyError, match=r"pip install 'duh\[tf\]'"):
        export(str(source), FrontendOptions())


def test_keras_and_saved_model_paths_are_claimed(tmp_path: Path) -> None:
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"")
    for path in ("m.keras", "m.h5", str(tmp_path / "sm")):
        entry = find(path)
        assert entry is not None and entry.name == "tensorflow" and entry.extra == "tf"
    assert find(str(tmp_path)) is None  # a directory without saved_model.pb


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One Keras MLP trained on digits (TF imports once per module), saved in every form."""
    pytest.importorskip("tensorflow", reason="duh[tf] is not installed (tensorflow-cpu)")
    pytest.importorskip("tf2onnx", reason="duh[tf] is not installed (tf2onnx)")
    import keras
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = (x[order] / 16.0).astype(np.float32), y[order]
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((64,), name="pixels"),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x[:1400], y[:1400], epochs=8, batch_size=32, verbose=0)
    root = tmp_path_factory.mktemp("keras")
    model.save(root / "digits.keras")
    model.save(root / "digits.h5")
    model.export(str(root / "digits_saved_model"), verbose=False)
    lam = keras.Sequential(
        [keras.Input((64,), name="pixels"), keras.layers.Lambda(lambda t: t * 2.0), keras.layers.Dense(10)]
    )
    lam.save(root / "lambda.keras")
    np.savez(root / "calib.npz", pixels=x[:300])
    np.savez(root / "check.npz", pixels=x[1400:])
    return {
        "model": model, "lambda": lam, "root": root, "x_test": x[1400:], "y_test": y[1400:],
        "calib": root / "calib.npz", "check": root / "check.npz",
    }  # fmt: skip


def test_keras_file_builds_for_cpu_and_int8_against_keras(trained: dict[str, Any], tmp_path: Path) -> None:
    x, y = trained["x_test"], trained["y_test"]
    expected = trained["model"].predict(x, verbose=0)
    top1 = expected.argmax(1)
    got = {}
    for target in ("cpu", "cpu-int8"):
        out = tmp_path / f"{target}.duh"
        duh.build(
            trained["root"] / "digits.keras", target=target, output=out, calib=trained["calib"],
            check_data=trained["check"], cache=False,
        )  # fmt: skip
        manifest = json.loads((out / "manifest.json").read_text())
        record = manifest["source"]["frontend"]
        assert record["frontend"] == "tensorflow" and record["format"] == "keras"
        assert record["keras"] and record["tf2onnx"] and record["signature"] == "serving_default"
        assert manifest["checks"]["framework"]["passed"] is True
        assert manifest["signature"]["inputs"][0]["shape"] == ["batch", 64]  # the batch stays dynamic
        got[target] = duh.load(out).run({"pixels": x})["output_0"]
    np.testing.assert_allclose(got["cpu"], expected, atol=1e-4, rtol=1e-3)
    assert np.array_equal(got["cpu"].argmax(1), top1)
    agreement = float(np.mean(got["cpu-int8"].argmax(1) == top1))
    assert agreement >= 0.99, agreement
    accuracy = float(np.mean(top1 == y)), float(np.mean(got["cpu-int8"].argmax(1) == y))
    assert accuracy[0] > 0.9 and abs(accuracy[0] - accuracy[1]) <= 0.01, accuracy


@pytest.mark.parametrize("form", ["digits.h5", "digits_saved_model"])
def test_h5_and_saved_model_export_matches_keras(trained: dict[str, Any], form: str) -> None:
    x = trained["x_test"][:64]
    expected = trained["model"].predict(x, verbose=0)
    exported = export(str(trained["root"] / form), FrontendOptions(opset=15))
    assert exported.record["opset"] == 15
    assert exported.record["format"] == ("h5" if form.endswith(".h5") else "saved_model")
    assert [i.name for i in exported.model.graph.input] == ["pixels"]
    session = ort.InferenceSession(exported.model.SerializeToString(), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {"pixels": x})
    assert exported.reference is not None
    reference = exported.reference({"pixels": x})
    np.testing.assert_allclose(reference["output_0"], expected, atol=1e-6)
    np.testing.assert_allclose(onnx_out, expected, atol=1e-5)


@pytest.mark.slow
def test_saved_model_builds_from_the_cli(trained: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "sm.duh"
    result = runner.invoke(
        app,
        ["build", str(trained["root"] / "digits_saved_model"), "-t", "cpu", "--check-data",
         str(trained["check"]), "-o", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    x = trained["x_test"]
    np.testing.assert_allclose(
        duh.load(out).run({"pixels": x})["output_0"], trained["model"].predict(x, verbose=0),
        atol=1e-4, rtol=1e-3,
    )  # fmt: skip


def test_lambda_layer_needs_trust_code(trained: dict[str, Any], tmp_path: Path) -> None:
    source = trained["root"] / "lambda.keras"
    result = runner.invoke(app, ["build", str(source), "-t", "cpu", "-o", str(tmp_path / "o.duh")])
    assert result.exit_code == ConfigError.exit_code, result.stderr
    text = " ".join(result.stderr.split())
    assert result.stderr.strip().startswith("error:") and "Lambda layer" in text
    assert "--trust-code" in text and not (tmp_path / "o.duh").exists()
    exported = export(str(source), FrontendOptions(trust_code=True))
    x = trained["x_test"][:8]
    assert exported.reference is not None
    np.testing.assert_allclose(
        exported.reference({"pixels": x})["output_0"], trained["lambda"].predict(x, verbose=0), atol=1e-6
    )


def test_truncated_or_foreign_files_get_one_line_and_exit_3(trained: dict[str, Any], tmp_path: Path) -> None:
    good = (trained["root"] / "digits.keras").read_bytes()
    cases = {
        "truncated.keras": good[:400],
        "foreign.keras": b"just text\n",
        "truncated.h5": (trained["root"] / "digits.h5").read_bytes()[:600],
        "foreign.h5": b"\x00" * 64,
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        result = runner.invoke(app, ["build", str(path), "-t", "cpu", "-o", str(tmp_path / "o.duh")])
        assert result.exit_code == ModelError.exit_code == 3, (name, result.stderr)
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        assert lines[0].startswith("error:"), name
        assert "Traceback" not in result.stderr
        assert name in " ".join(result.stderr.split())
        assert not (tmp_path / "o.duh").exists()
