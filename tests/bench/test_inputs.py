"""Shapes, batches and real data: what the benchmark feeds, and the errors for wrong options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from duh.bench import group_shapes, make_workloads
from duh.errors import ConfigError, InputError
from duh.runtime import TensorSpec
from duh.runtime._data import read_samples

IMAGE = (TensorSpec("input", "float32", ("batch", 1, 8, 8)),)
PAIR = (TensorSpec("a", "float32", ("batch", 4)), TensorSpec("b", "int64", ("batch", 4)))


def test_repeated_shape_names_make_shape_sets() -> None:
    sets = group_shapes([("a", (1, 4)), ("b", (1, 4)), ("a", (2, 4)), ("b", (2, 4))])
    assert sets == [{"a": (1, 4), "b": (1, 4)}, {"a": (2, 4), "b": (2, 4)}]
    assert group_shapes([("a", (1, 4)), ("a", (3, 4)), ("b", (7, 4))]) == [
        {"a": (1, 4), "b": (7, 4)}, {"a": (3, 4), "b": (7, 4)}]
    with pytest.raises(ConfigError, match="different numbers of times"):
        group_shapes([("a", (1, 4)), ("a", (2, 4)), ("b", (1, 4)), ("b", (2, 4)), ("b", (3, 4))])


def test_synthetic_feeds_follow_dtypes_shapes_and_seed() -> None:
    [wl] = make_workloads(PAIR, [], [None], seed=7)
    feed = wl.feeds[0]
    assert feed["a"].dtype == np.float32 and feed["a"].shape == (1, 4)
    assert feed["b"].dtype == np.int64 and feed["b"].min() >= 0
    [again] = make_workloads(PAIR, [], [None], seed=7)
    assert np.array_equal(again.feeds[0]["a"], feed["a"])
    [other] = make_workloads(PAIR, [], [None], seed=8)
    assert not np.array_equal(other.feeds[0]["a"], feed["a"])


def test_offline_batches_replace_the_dynamic_axis() -> None:
    rows = make_workloads(IMAGE, [], [1, 8])
    assert [r.label for r in rows] == ["batch 1", "batch 8"]
    assert rows[1].feeds[0]["input"].shape == (8, 1, 8, 8) and rows[1].batch == 8


def test_a_mix_of_shapes_adds_a_row_cycling_through_them() -> None:
    rows = make_workloads(PAIR, [{"a": (1, 4), "b": (1, 4)}, {"a": (3, 4), "b": (3, 4)}], [None])
    assert [r.label for r in rows] == ["a=1x4, b=1x4", "a=3x4, b=3x4", "mix"]
    mix = rows[2]
    assert [f["a"].shape[0] for f in mix.feeds] == [1, 3]
    assert mix.batch == 2.0
    rows = make_workloads(PAIR, [{"a": (1, 4), "b": (1, 4)}, {"a": (3, 4), "b": (3, 4)}], [None],
                          feeds=2)
    assert [f["a"].shape[0] for f in rows[2].feeds] == [1, 3, 1, 3]


def test_one_synthetic_feed_by_default_more_on_request() -> None:
    [one] = make_workloads(IMAGE, [], [None])
    assert len(one.feeds) == 1
    [four] = make_workloads(IMAGE, [], [None], feeds=4)
    assert len(four.feeds) == 4
    assert np.array_equal(four.feeds[0]["input"], one.feeds[0]["input"])
    assert not np.array_equal(four.feeds[1]["input"], four.feeds[0]["input"])


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ({"img": (1, 1, 8, 8)}, "'img', which is not an input of this model; its inputs are input"),
        ({"input": (1, 8, 8)}, "has rank 3, but input 'input' is [batch, 1, 8, 8] (rank 4)"),
        ({"input": (1, 3, 8, 8)}, "sets axis 1 to 3, but input 'input' is fixed at"),
        ({"input": (0, 1, 8, 8)}, "axis 0 must be positive"),
    ],
)
def test_a_wrong_shape_is_a_config_error_that_says_why(
    shape: dict[str, tuple[int, ...]], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        make_workloads(IMAGE, [shape], [None])
    assert message in str(info.value)


def test_a_batch_on_a_fixed_axis_is_refused() -> None:
    fixed = (TensorSpec("x", "float32", (1, 4)),)
    with pytest.raises(ConfigError, match="--batch 8 needs a dynamic first axis"):
        make_workloads(fixed, [], [8])


def test_read_samples_from_npz_splits_the_first_axis(tmp_path: Path) -> None:
    data = np.arange(5 * 64, dtype=np.float64).reshape(5, 1, 8, 8)
    np.savez(tmp_path / "d.npz", input=data)
    samples = read_samples(tmp_path / "d.npz", IMAGE)
    assert len(samples) == 5
    assert samples[2]["input"].shape == (1, 1, 8, 8) and samples[2]["input"].dtype == np.float32
    assert samples[2]["input"][0, 0, 0, 0] == 128.0
    assert len(read_samples(tmp_path / "d.npz", IMAGE, limit=3)) == 3


def test_read_samples_from_a_directory_in_name_order(tmp_path: Path) -> None:
    np.save(tmp_path / "b.npy", np.ones((2, 1, 8, 8), np.float32))
    np.save(tmp_path / "a.npy", np.zeros((1, 8, 8), np.float32))  # one sample, no batch axis
    samples = read_samples(tmp_path, IMAGE)
    assert [float(s["input"].max()) for s in samples] == [0.0, 1.0, 1.0]


def test_read_samples_with_several_inputs_and_batching(tmp_path: Path) -> None:
    np.savez(tmp_path / "p.npz", a=np.ones((6, 4), np.float32), b=np.arange(24).reshape(6, 4))
    samples = read_samples(tmp_path / "p.npz", PAIR)
    [wl] = make_workloads(PAIR, [], [3], samples=samples)
    assert wl.feeds[0]["a"].shape == (3, 4) and wl.feeds[0]["b"].dtype == np.int64
    assert wl.feeds[1]["b"][0, 0] == 12  # the second feed starts at sample 3


@pytest.mark.parametrize(
    ("arrays", "error", "message"),
    [
        ({"x": np.ones((2, 1, 8, 8), np.float32), "y": np.ones(2)}, InputError, "no array for input 'input'"),
        ({"input": np.ones((2, 8), np.float32)}, InputError, "does not fit [batch, 1, 8, 8]"),
        ({"input": np.ones((2, 1, 8, 8), np.int32)}, InputError, "dtype int32, expected float32"),
    ],
)
def test_read_samples_says_what_does_not_fit(
    tmp_path: Path, arrays: dict[str, np.ndarray], error: type[Exception], message: str
) -> None:
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(error) as info:
        read_samples(tmp_path / "bad.npz", IMAGE)
    assert message in str(info.value)


def test_read_samples_missing_path_and_bad_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_samples(tmp_path / "nope.npz", IMAGE)
    (tmp_path / "junk.npz").write_bytes(b"not numpy")
    with pytest.raises(ConfigError, match="cannot read"):
        read_samples(tmp_path / "junk.npz", IMAGE)


def test_shape_and_data_cannot_be_combined(tmp_path: Path) -> None:
    samples = [{"input": np.zeros((1, 1, 8, 8), np.float32)}]
    with pytest.raises(ConfigError, match="cannot be combined"):
        make_workloads(IMAGE, [{"input": (2, 1, 8, 8)}], [None], samples=samples)
