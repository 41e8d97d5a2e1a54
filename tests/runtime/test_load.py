from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import duh
from duh.errors import ArtifactError, InputError

DIGITS = np.load(Path(__file__).resolve().parents[2] / "fixtures" / "digits_test.npz")


@pytest.fixture
def artifact(built: Callable[..., Path], tmp_path: Path) -> Path:
    """A private copy of the digits artifact, free to damage."""
    copy = tmp_path / "digits.duh"
    shutil.copytree(built("digits_cnn.onnx", "onnxruntime:cpu-fp32"), copy)
    return copy


def test_load_runs_and_matches_the_source_model(artifact: Path, digits_model: Path) -> None:
    x = DIGITS["input"][:16]
    with duh.load(artifact) as session, duh.load(digits_model) as source:
        assert [s.name for s in session.inputs] == ["input"]
        assert session.inputs[0].shape == ("batch", 1, 8, 8)
        got = session.run({"input": x})["logits"]
        want = source.run({"input": x})["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert np.mean(np.argmax(got, 1) == DIGITS["label"][:16]) >= 0.9


def test_wrong_dtype_is_an_input_error(artifact: Path) -> None:
    session = duh.load(artifact)
    with pytest.raises(InputError, match="dtype float64, expected float32"):
        session.run({"input": DIGITS["input"][:2].astype(np.float64)})


def test_a_tampered_file_is_refused(artifact: Path) -> None:
    model = artifact / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"model.onnx has sha256 .* modified after the build"):
        duh.load(artifact)


def test_a_missing_file_is_refused(artifact: Path) -> None:
    (artifact / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match="missing model.onnx"):
        duh.load(artifact)


def test_an_added_file_is_refused(artifact: Path) -> None:
    (artifact / "evil.so").write_bytes(b"\0")
    with pytest.raises(ArtifactError, match="does not list: evil.so"):
        duh.load(artifact)


def test_a_damaged_manifest_is_refused(artifact: Path) -> None:
    (artifact / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        duh.load(artifact)


def test_another_format_version_is_refused(artifact: Path) -> None:
    path = artifact / "manifest.json"
    data = json.loads(path.read_text())
    data["format_version"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="format version 99"):
        duh.load(artifact)


def test_host_requirements_are_checked(artifact: Path) -> None:
    path = artifact / "manifest.json"
    data = json.loads(path.read_text())
    data["host_requirements"] = {"cpu_flags": ["imaginary_isa"]}
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="built for a CPU with imaginary_isa"):
        duh.load(artifact)


def test_a_cuda_artifact_is_refused_without_a_device(artifact: Path) -> None:
    path = artifact / "manifest.json"
    data = json.loads(path.read_text())
    data["host_requirements"] = {"cuda_compute_capability": "8.9"}
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="needs a CUDA device"):
        duh.load(artifact)


def test_a_directory_that_is_no_artifact(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no manifest.json"):
        duh.load(tmp_path)
    with pytest.raises(ArtifactError, match="does not exist"):
        duh.load(tmp_path / "nope.duh")


def test_runtime_does_not_import_the_compiler() -> None:
    import subprocess
    import sys

    code = (
        "import sys, duh; from duh.runtime import load; "
        "bad = [m for m in sys.modules if m.startswith(('duh.compiler', 'duh.passes', 'onnxsim'))]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_plain_model_with_dims_written_as_minus_one_takes_any_size(tmp_path: Path) -> None:
    """paddle2onnx writes -1 (and tf2onnx "?") for a dynamic dimension: neither is a size."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, "?", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "paddle_like.onnx")
    with duh.load(tmp_path / "paddle_like.onnx") as session:
        assert session.inputs[0].shape == (None, 3, None, 4)
        got = session.run({"x": -np.ones((2, 3, 5, 4), np.float32)})["y"]
    assert got.shape == (2, 3, 5, 4) and not got.any()
