from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from duh.calibration import load_calibration
from duh.errors import CalibrationError
from duh.runtime import TensorSpec

IMAGE = (TensorSpec("x", "float32", ("batch", 3, 8, 8)),)
TWO = (TensorSpec("a", "float32", ("n", 4)), TensorSpec("b", "int64", ("n", 2)))


def _two_inputs(count: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "a": rng.standard_normal((count, 4)).astype(np.float32),
        "b": rng.integers(0, 9, (count, 2)).astype(np.int64),
    }


def test_npz_named_after_inputs_splits_samples_and_holdout(tmp_path: Path) -> None:
    data = _two_inputs(40)
    np.savez(tmp_path / "c.npz", **data, label=np.arange(40))
    calib = load_calibration(tmp_path / "c.npz", TWO, samples=16, holdout=6)
    assert len(calib.feeds) == 16 and len(calib.check) == 6 and not calib.synthetic
    assert calib.feeds[0]["a"].shape == (1, 4) and calib.feeds[0]["b"].dtype == np.int64
    rows = {tuple(f["a"][0]) for f in calib.feeds}
    held = {tuple(f["a"][0]) for f in calib.check}
    assert not rows & held  # the check inputs are held out from calibration
    assert rows | held <= {tuple(r) for r in data["a"]}
    again = load_calibration(tmp_path / "c.npz", TWO, samples=16, holdout=6)
    assert again.digest == calib.digest  # deterministic: same split, same digest
    assert load_calibration(tmp_path / "c.npz", TWO, samples=15, holdout=6).digest != calib.digest


def test_missing_input_array_names_what_is_there(tmp_path: Path) -> None:
    np.savez(tmp_path / "c.npz", a=np.zeros((4, 4), np.float32), c=np.zeros((4, 2), np.int64))
    with pytest.raises(
        CalibrationError, match=r"has arrays a, c but the model's inputs are a, b \(missing b\)"
    ):
        load_calibration(tmp_path / "c.npz", TWO)


def test_a_single_unnamed_array_feeds_a_single_input(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.ones((5, 3, 8, 8), np.float64))
    calib = load_calibration(tmp_path / "x.npy", IMAGE, samples=10, holdout=1)
    assert len(calib.feeds) == 4 and calib.feeds[0]["x"].dtype == np.float32


def test_wrong_sample_shape_and_dtype_are_explained(tmp_path: Path) -> None:
    np.savez(tmp_path / "s.npz", x=np.zeros((5, 3, 9, 8), np.float32))
    with pytest.raises(
        CalibrationError, match=r"samples have shape \[3, 9, 8\], the model expects \[3, 8, 8\]"
    ):
        load_calibration(tmp_path / "s.npz", IMAGE)
    np.savez(tmp_path / "t.npz", a=np.zeros((5, 4), np.float32), b=np.full((5, 2), 0.5))
    with pytest.raises(CalibrationError, match=r"input 'b' is float64, the model wants int64"):
        load_calibration(tmp_path / "t.npz", TWO)


def test_directory_of_array_files(tmp_path: Path) -> None:
    data = _two_inputs(12)
    for i in range(3):
        np.savez(
            tmp_path / f"part{i}.npz",
            a=data["a"][4 * i : 4 * i + 4],
            b=data["b"][4 * i : 4 * i + 4],
        )
    calib = load_calibration(tmp_path, TWO, samples=100, holdout=2)
    assert len(calib.feeds) + len(calib.check) == 12
    single = tmp_path / "single"
    single.mkdir()
    for i in range(3):  # one sample per file, without the samples axis
        np.save(single / f"{i}.npy", np.full((3, 8, 8), i, np.float32))
    assert len(load_calibration(single, IMAGE, holdout=0).feeds) == 3


def test_small_data_holds_out_at_most_half(tmp_path: Path) -> None:
    np.savez(tmp_path / "c.npz", **_two_inputs(6))
    calib = load_calibration(tmp_path / "c.npz", TWO, holdout=8)
    assert len(calib.check) == 3 and len(calib.feeds) == 3


def test_synthetic_is_flagged(tmp_path: Path) -> None:
    calib = load_calibration("synthetic", TWO, samples=5)
    assert (
        calib.synthetic
        and calib.source == "synthetic"
        and len(calib.feeds) == 5
        and not calib.check
    )
    assert calib.feeds[0]["b"].dtype == np.int64


def test_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="does not exist"):
        load_calibration(tmp_path / "nope.npz", TWO)
    (tmp_path / "data.csv").write_text("1,2\n")
    with pytest.raises(CalibrationError, match="neither .npz, .npy nor a directory"):
        load_calibration(tmp_path / "data.csv", TWO)
    with pytest.raises(CalibrationError, match="holds no .npy/.npz files and no images"):
        load_calibration(tmp_path, TWO)


def test_scalar_inputs_keep_rank_zero_and_minus_one_dims_are_dynamic(tmp_path: Path) -> None:
    inputs = (TensorSpec("x", "float32", (-1, 4)), TensorSpec("sr", "int64", ()))
    synthetic = load_calibration("synthetic", inputs, samples=3)
    assert [f["x"].shape for f in synthetic.feeds] == [(1, 4)] * 3
    assert [f["sr"].shape for f in synthetic.feeds] == [()] * 3
    np.savez(tmp_path / "s.npz", x=np.ones((5, 4), np.float32), sr=np.full(5, 16000))
    real = load_calibration(tmp_path / "s.npz", inputs, samples=3, holdout=2)
    assert real.check[0]["sr"].shape == () and int(real.check[0]["sr"]) == 16000
    assert real.feeds[0]["x"].shape == (1, 4)


def test_whole_feeds_along_the_first_axis_are_read_as_samples(tmp_path: Path) -> None:
    x = np.arange(5 * 3 * 8 * 8, dtype=np.float32).reshape(5, 1, 3, 8, 8)
    np.save(tmp_path / "feeds.npy", x)
    calib = load_calibration(tmp_path / "feeds.npy", IMAGE, samples=5)
    assert len(calib.feeds) == 5 and calib.feeds[0]["x"].shape == (1, 3, 8, 8)


def test_check_data_errors_name_check_data(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match=r"^check data '.*nope.npz' does not exist") as caught:
        load_calibration(tmp_path / "nope.npz", IMAGE, purpose="check data")
    assert "synthetic" not in str(caught.value)


def test_whole_feeds_of_inputs_that_share_no_batch_axis(tmp_path: Path) -> None:
    """Expand's target shape [2] beside X [3, 1]: N whole feeds, each used as it is."""
    specs = [TensorSpec("X", "float32", (3, 1)), TensorSpec("shape", "int64", (2,))]
    x = np.arange(6, dtype=np.float32).reshape(2, 3, 1)
    np.savez(tmp_path / "feeds.npz", X=x, shape=np.array([[3, 3], [3, 4]], np.int64))
    data = load_calibration(tmp_path / "feeds.npz", specs, holdout=1, purpose="check data")
    assert [f["shape"].tolist() for f in data.check] == [[3, 3]]
    assert [f["shape"].tolist() for f in data.feeds] == [[3, 4]]
    assert data.feeds[0]["X"].shape == (3, 1) and data.feeds[0]["X"][2, 0] == 5.0
    assert "whole feeds" in data.source
