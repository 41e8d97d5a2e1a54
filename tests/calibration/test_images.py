from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from duh.calibration import PreprocessSpec, load_calibration, load_image, preprocess_spec
from duh.errors import CalibrationError
from duh.runtime import TensorSpec

PIL = pytest.importorskip("PIL.Image")


def _image(path: Path, width: int, height: int, seed: int = 0) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    PIL.fromarray(pixels).save(path)
    return pixels


def test_resize_crop_normalize_bgr_nchw_match_a_hand_computation(tmp_path: Path) -> None:
    pixels = _image(tmp_path / "a.png", 40, 20)
    spec = PreprocessSpec(
        resize=(20,),
        crop=(10, 12),
        interpolation="nearest",
        mean=(0.5, 0.4, 0.3),
        std=(0.2, 0.25, 0.5),
        order="bgr",
        layout="nchw",
    )
    got = load_image(tmp_path / "a.png", spec, None)
    # Shorter side is already 20: no resize. Center crop 10x12 from 20x40: rows 5..15, cols 14..26.
    crop = pixels[5:15, 14:26].astype(np.float32)
    # mean/std are in the model's channel order, after the flip to BGR (as PaddleClas models use).
    want = (
        (crop[:, :, ::-1] / 255 - np.array([0.5, 0.4, 0.3])) / np.array([0.2, 0.25, 0.5])
    ).transpose(2, 0, 1)
    assert got.shape == (3, 10, 12) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_short_side_resize_keeps_aspect_and_default_fits_the_model(tmp_path: Path) -> None:
    _image(tmp_path / "b.png", 300, 150)
    assert load_image(
        tmp_path / "b.png", PreprocessSpec(resize=(64,), layout="nhwc"), None
    ).shape == (64, 128, 3)
    assert load_image(tmp_path / "b.png", PreprocessSpec(order="gray"), (7, 9)).shape == (1, 7, 9)


def test_spec_from_toml_and_text_with_text_winning(tmp_path: Path) -> None:
    toml = tmp_path / "pre.toml"
    toml.write_text(
        '[preprocess]\nresize = 256\ncrop = 224\nmean = [0.485, 0.456, 0.406]\norder = "bgr"\n'
    )
    spec = preprocess_spec({"config": toml, "spec": "crop=200x180,interpolation=lanczos"})
    assert spec.resize == (256,) and spec.crop == (200, 180) and spec.order == "bgr"
    assert spec.mean == (0.485, 0.456, 0.406) and spec.interpolation == "lanczos"
    assert preprocess_spec("std=0.5/0.5/0.5,layout=nhwc").std == (0.5, 0.5, 0.5)
    with pytest.raises(CalibrationError, match="unknown preprocessing key 'colour'"):
        preprocess_spec("colour=red")
    with pytest.raises(CalibrationError, match="order 'cmyk' is not one of"):
        preprocess_spec("order=cmyk")


def test_an_image_directory_calibrates_an_image_model(tmp_path: Path) -> None:
    for i in range(6):
        _image(tmp_path / f"{i}.png", 30 + i, 20, seed=i)
    (tmp_path / "notes.txt").write_text("ignored")
    inputs = (TensorSpec("x", "float32", ("n", 3, 16, 16)),)
    calib = load_calibration(
        tmp_path, inputs, samples=10, holdout=2, preprocess="resize=16,crop=16"
    )
    assert len(calib.feeds) == 4 and len(calib.check) == 2
    assert calib.feeds[0]["x"].shape == (1, 3, 16, 16)
    assert "6 images" in calib.source
    other = load_calibration(
        tmp_path, inputs, samples=10, holdout=2, preprocess="resize=16,crop=16,mean=0.5"
    )
    assert other.digest != calib.digest  # the preprocessing is part of the data's identity
    gray = (TensorSpec("x", "float32", ("n", 1, 16, 16)),)
    with pytest.raises(CalibrationError, match="has 1 channels"):
        load_calibration(tmp_path, gray, preprocess="resize=16,crop=16")
