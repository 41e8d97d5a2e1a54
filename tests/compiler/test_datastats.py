"""The reference statistics a build records from its real calibration/check data (datastats.json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import duh
from duh.compiler._datastats import reference_stats
from duh.errors import ArtifactError
from duh.runtime import (
    DATA_STATS_NAME,
    TensorSpec,
    bin_counts,
    feature_axis,
    feature_rows,
    read_data_stats,
    read_manifest,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
DIGITS = FIXTURES / "digits_cnn.onnx"
CALIB = FIXTURES / "digits_calib.npz"


@pytest.fixture(scope="module")
def digits_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("datastats") / "digits.duh"
    duh.build(DIGITS, "onnxruntime:cpu-fp32", out, calib=CALIB)
    return out


def test_build_records_per_channel_deciles_of_the_calibration_data(digits_artifact: Path) -> None:
    manifest = read_manifest(digits_artifact)
    assert DATA_STATS_NAME in manifest.files  # hashed like every file: a signature covers it
    assert (digits_artifact / DATA_STATS_NAME).stat().st_size < 2048
    stats = read_data_stats(digits_artifact)
    assert stats is not None and "digits_calib.npz" in stats.source
    sketch = stats.inputs["input"]
    assert sketch.axis == 1 and sketch.features == 1  # NCHW with one channel
    assert sketch.rows == 200
    pixels = np.load(CALIB)["input"].ravel()
    edges = sketch.edges[0]
    assert np.all(np.diff(edges) >= 0)
    np.testing.assert_allclose(edges, np.quantile(pixels, np.linspace(0, 1, 11)[1:-1]),
                               atol=1e-5)
    # The reference shares are those of the calibration pixels in the recorded bins.
    shares = np.bincount(np.searchsorted(edges, pixels, side="right"), minlength=10) / pixels.size
    np.testing.assert_allclose(sketch.reference[0], shares, atol=1e-5)


def test_tampered_stats_are_refused(digits_artifact: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy.duh"
    shutil.copytree(digits_artifact, copy)
    path = copy / DATA_STATS_NAME
    doc = json.loads(path.read_text())
    doc["inputs"]["input"]["reference"][0] = [0.1] * 10
    path.write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match=f"{DATA_STATS_NAME} has sha256"):
        read_data_stats(copy)
    with pytest.raises(ArtifactError, match=f"{DATA_STATS_NAME} has sha256"):
        duh.load(copy)


def test_synthetic_inputs_record_nothing(tmp_path: Path) -> None:
    out = tmp_path / "plain.duh"
    duh.build(DIGITS, "onnxruntime:cpu-fp32", out)  # verified on synthetic inputs only
    assert not (out / DATA_STATS_NAME).exists()
    assert read_data_stats(out) is None
    assert read_data_stats(DIGITS) is None  # a plain .onnx has none


def test_tabular_inputs_get_one_sketch_per_feature() -> None:
    from sklearn.datasets import load_digits

    x = load_digits().data.astype(np.float32)  # [1797, 64], pixel values 0..16
    spec = TensorSpec("x", "float32", ("N", 64))
    stats = reference_stats([spec], [{"x": x[:1000]}], "digits")
    assert stats is not None
    sketch = stats.inputs["x"]
    assert sketch.axis == 1 and sketch.edges.shape == (64, 9)
    np.testing.assert_allclose(sketch.reference.sum(axis=1), 1.0, atol=1e-5)
    # Column 0 is always 0 in digits: every reference value sits in its top bin.
    assert sketch.reference[0, -1] == 1.0
    # Binning held-out rows gives shares near the reference ones.
    held = bin_counts(feature_rows(x[1000:], 1), sketch.edges) / 797
    assert np.abs(held - sketch.reference).max() < 0.12


def test_feature_axis_and_rows() -> None:
    assert feature_axis(("N", 3, 224, 224)) == 1  # NCHW: channels
    assert feature_axis(("N", 224, 224, 3)) == 3  # NHWC: channels last
    assert feature_axis(("N", 128, 768)) is None  # too wide: pooled
    assert feature_axis(("N", 20)) == 1
    assert feature_axis(("N",)) is None
    image = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    rows = feature_rows(image, 1)
    assert rows.shape == (32, 3)
    np.testing.assert_array_equal(np.sort(rows[:, 1]), np.sort(image[:, 1].ravel()))
    sampled = feature_rows(image, 1, max_rows=8)
    assert sampled.shape[0] <= 8 and set(sampled[:, 2]) <= set(image[:, 2].ravel())
