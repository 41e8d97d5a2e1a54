"""``duh.compare`` on real engines and fixtures: what passes, what fails, golden outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import duh
from duh.compare import CompareReport, CompareRequest, compare, default_tolerance, read_golden
from duh.errors import ArtifactError, CalibrationError, ConfigError, ModelError
from duh.targets import package_version

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
MODEL = FIXTURES / "digits_cnn.onnx"
DATA = FIXTURES / "digits_test.npz"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compare")
    out = {}
    out["fp32"] = root / "digits.fp32.duh"
    duh.build(MODEL, "onnxruntime:cpu-fp32", out["fp32"])
    out["int8"] = root / "digits.int8.duh"
    duh.build(MODEL, "onnxruntime:cpu-int8", out["int8"], calib=FIXTURES / "digits_calib.npz")
    return out


@pytest.fixture(scope="module")
def perturbed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits CNN with its last bias moved by 0.05: a small, real numerical regression."""
    model = onnx.load(MODEL)
    for init in model.graph.initializer:
        if init.name == "fc2.bias":
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + 0.05, init.name))
    path = tmp_path_factory.mktemp("perturbed") / "digits_perturbed.onnx"
    onnx.save(model, path)
    return path


def _run(*subjects: Path, data: Path = DATA, **kwargs: Any) -> CompareReport:
    return compare(CompareRequest(tuple(subjects), data, **kwargs))


def test_an_fp32_artifact_matches_its_source(artifacts: dict[str, Path]) -> None:
    report = _run(MODEL, artifacts["fp32"])
    assert report.passed and report.data["feeds"] == 540
    (result,) = report.results
    (logits,) = result.outputs
    assert result.subject.target == "onnxruntime:cpu-fp32" and result.subject.precision == "fp32"
    assert logits.max_abs < 1e-4 and logits.cosine > 0.99999 and logits.top1 == 1.0
    assert logits.tolerance == default_tolerance("fp32")


@pytest.mark.skipif(package_version("openvino") is None, reason="openvino is not installed")
def test_an_openvino_artifact_matches_the_source_and_the_ort_artifact(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    ov = tmp_path / "digits.ov.duh"
    duh.build(MODEL, "openvino:cpu-fp32", ov)
    report = _run(MODEL, ov, artifacts["fp32"], samples=100)
    assert report.passed and [r.subject.engine for r in report.results] == [
        "openvino",
        "onnxruntime",
    ]
    assert report.data["feeds"] == 100


def test_int8_passes_its_own_criteria_and_fails_a_tight_atol(artifacts: dict[str, Path]) -> None:
    loose = _run(MODEL, artifacts["int8"])
    (logits,) = loose.results[0].outputs
    assert loose.passed and logits.tolerance.min_top1 == 0.95 and not logits.tolerance.elementwise
    assert 0 < logits.max_abs and logits.top1 is not None and logits.top1 >= 0.95
    tight = _run(MODEL, artifacts["int8"], tolerances={"logits": {"atol": 1e-3}})
    (logits,) = tight.results[0].outputs
    assert not tight.passed and logits.mismatched and logits.mismatched > 0
    assert "out of tolerance" in logits.reason and len(logits.worst) == 5
    assert logits.worst[0].abs_diff == pytest.approx(logits.max_abs)


def test_a_perturbed_model_fails_and_its_worst_elements_show_the_shift(perturbed: Path) -> None:
    report = _run(MODEL, perturbed)
    (logits,) = report.results[0].outputs
    assert not report.passed and logits.max_abs == pytest.approx(0.05, abs=1e-5)
    assert logits.mean_abs == pytest.approx(0.05, abs=1e-5) and logits.top1 is not None
    assert all(w.subject - w.reference == pytest.approx(0.05, abs=1e-5) for w in logits.worst)
    # Loosened for this output, the same pair passes.
    assert _run(MODEL, perturbed, tolerances={"*": {"atol": 0.06}}).passed


def test_golden_round_trip_and_a_tampered_golden(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    golden = tmp_path / "golden.npz"
    saved = _run(MODEL, save_outputs=golden)
    assert saved.results == () and saved.saved == golden and golden.is_file()
    recorded = read_golden(golden)
    assert recorded.output_names == ("logits",) and len(recorded.outputs) == 540
    assert _run(artifacts["fp32"], MODEL, load_outputs=golden).passed
    # One value changed in the file: the artifact no longer matches it.
    with np.load(golden) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["output_0"][17, 0, 4] += 1.0
    tampered = tmp_path / "tampered.npz"
    np.savez(tampered, **arrays)
    report = _run(artifacts["fp32"], load_outputs=tampered)
    (logits,) = report.results[0].outputs
    assert not report.passed and (logits.worst[0].feed, logits.worst[0].index) == (17, (0, 4))


def test_golden_for_other_outputs_or_other_data_is_one_error(tmp_path: Path) -> None:
    golden = tmp_path / "golden.npz"
    _run(MODEL, save_outputs=golden, samples=20)
    with pytest.raises(ConfigError, match="recorded on other inputs"):
        _run(MODEL, load_outputs=golden)  # all 540 samples, not 20
    with np.load(golden) as archive:
        arrays = {k: archive[k] for k in archive.files}
    header = json.loads(str(arrays["__duh_golden__"]))
    header["outputs"][0]["name"] = "scores"
    renamed = tmp_path / "renamed.npz"
    np.savez(renamed, **{**arrays, "__duh_golden__": np.array(json.dumps(header))})
    with pytest.raises(ConfigError, match=r"no output 'scores' that the golden outputs hold"):
        _run(MODEL, load_outputs=renamed, samples=20)
    reshaped = tmp_path / "reshaped.npz"
    np.savez(reshaped, **{**arrays, "output_0": arrays["output_0"][:, :, :5]})
    with pytest.raises(ConfigError, match=r"recorded with shape \[1, 5\], .* gives \[1, 10\]"):
        _run(MODEL, load_outputs=reshaped, samples=20)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="is not a readable .npz"):
        _run(MODEL, load_outputs=tmp_path / "junk.npz")


def test_multi_io_integer_outputs_are_compared_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = tmp_path / "multi.npz"
    np.savez(data, a=rng.standard_normal((30, 4)).astype(np.float32),
             b=rng.integers(0, 5, (30, 4)).astype(np.int64))  # fmt: skip
    multi = FIXTURES / "multi_io.onnx"
    report = _run(multi, multi, data=data)
    assert report.passed and [o.name for o in report.results[0].outputs] == ["sum", "argmax"]
    argmax = report.results[0].outputs[1]
    assert argmax.dtype == "int64" and argmax.tolerance.atol == 0 and argmax.tolerance.elementwise
    golden = tmp_path / "multi_golden.npz"
    _run(multi, data=data, save_outputs=golden)
    assert _run(multi, data=data, load_outputs=golden).passed


def test_subjects_that_batch_the_data_differently_are_refused(tmp_path: Path) -> None:
    fixed = tmp_path / "digits.batch4.duh"
    duh.build(MODEL, "onnxruntime:cpu-fp32", fixed, shapes={"input": (4, 1, 8, 8)})
    with pytest.raises(ConfigError, match=r"reads --data as 20 feeds \(input\[4, 1, 8, 8\]\)"):
        _run(MODEL, fixed, samples=20)
    assert _run(fixed, fixed, samples=20).passed


def test_bad_input_is_one_error_and_writes_nothing(tmp_path: Path) -> None:
    golden = tmp_path / "g.npz"
    with pytest.raises(ModelError, match="does not exist"):
        _run(MODEL, tmp_path / "missing.onnx", save_outputs=golden)
    with pytest.raises(ArtifactError, match="does not exist"):
        _run(MODEL, tmp_path / "missing.duh")
    with pytest.raises(ConfigError, match="neither an .onnx model nor a .duh artifact"):
        _run(MODEL, DATA)
    with pytest.raises(CalibrationError, match="missing a, b"):
        _run(FIXTURES / "multi_io.onnx", FIXTURES / "multi_io.onnx")
    with pytest.raises(CalibrationError, match="does not exist"):
        _run(MODEL, MODEL, data=tmp_path / "nope.npz")
    with pytest.raises(ConfigError, match="not both"):
        _run(MODEL, save_outputs=golden, load_outputs=golden)
    with pytest.raises(ConfigError, match="needs two models"):
        _run(MODEL)
    with pytest.raises(ConfigError, match="unknown output 'prob'"):
        _run(MODEL, MODEL, tolerances={"prob": {"atol": 1.0}})
    with pytest.raises(ConfigError, match="name the golden file NAME.npz"):
        _run(MODEL, save_outputs=tmp_path / "g.json")
    assert list(tmp_path.iterdir()) == []
