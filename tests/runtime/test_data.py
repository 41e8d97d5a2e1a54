from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from duh.errors import InputError
from duh.runtime import TensorSpec, read_samples


def test_an_input_with_a_fixed_first_axis_is_one_feed(tmp_path: Path) -> None:
    """Expand's target shape [2] beside X [3, 1]: both arrays are one feed, not samples."""
    np.savez(
        tmp_path / "d.npz", X=np.ones((3, 1), np.float32), shape=np.array([2, 3], np.int64)
    )
    specs = [TensorSpec("X", "float32", (3, 1)), TensorSpec("shape", "int64", (2,))]
    (feed,) = read_samples(tmp_path / "d.npz", specs)
    assert feed["X"].shape == (3, 1) and feed["shape"].tolist() == [2, 3]


def test_a_dynamic_first_axis_still_counts_samples(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.arange(12, dtype=np.float32).reshape(4, 3))
    feeds = read_samples(tmp_path / "d.npz", [TensorSpec("x", "float32", ("batch", 3))])
    assert [f["x"].shape for f in feeds] == [(1, 3)] * 4
    assert feeds[2]["x"].tolist() == [[6.0, 7.0, 8.0]]


def test_a_scalar_input_reads_as_one_feed(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", sr=np.array(16000, np.int64))
    (feed,) = read_samples(tmp_path / "d.npz", [TensorSpec("sr", "int64", ())])
    assert feed["sr"].shape == () and int(feed["sr"]) == 16000


def test_sample_counts_that_disagree_are_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", a=np.ones((4, 3), np.float32), b=np.ones((2, 3), np.float32))
    specs = [TensorSpec("a", "float32", ("n", 3)), TensorSpec("b", "float32", ("n", 3))]
    with pytest.raises(InputError, match="different numbers of samples"):
        read_samples(tmp_path / "d.npz", specs)
