from __future__ import annotations

import numpy as np
import pytest

from duh.errors import InputError
from duh.runtime import TensorSpec, check_feed

SPECS = (
    TensorSpec("a", "float32", ("batch", 4)),
    TensorSpec("b", "int64", ("batch", 4)),
)


def test_a_valid_feed_passes_and_comes_back_contiguous() -> None:
    a = np.ones((3, 8), np.float32)[:, ::2]
    out = check_feed(SPECS, {"a": a, "b": np.zeros((3, 4), np.int64)})
    assert out["a"].flags.c_contiguous
    np.testing.assert_array_equal(out["a"], a)


@pytest.mark.parametrize(
    ("feed", "message"),
    [
        ({"a": np.ones((1, 4), np.float32)}, "missing input 'b'"),
        (
            {"a": np.ones((1, 4), np.float32), "b": np.ones((1, 4), np.int64), "c": 1},
            "unknown input 'c'",
        ),
        (
            {"a": np.ones((1, 4), np.float64), "b": np.ones((1, 4), np.int64)},
            "dtype float64, expected float32",
        ),
        (
            {"a": np.ones((1, 5), np.float32), "b": np.ones((1, 4), np.int64)},
            "axis 1 must be 4, got 5",
        ),
        (
            {"a": np.ones((4,), np.float32), "b": np.ones((1, 4), np.int64)},
            "(rank 1), expected [batch, 4] (rank 2)",
        ),
        (
            {"a": np.ones((2, 4), np.float32), "b": np.ones((3, 4), np.int64)},
            "dimension 'batch' is 2 in input 'a' but 3",
        ),
    ],
)
def test_bad_feeds_say_what_was_given_and_expected(feed: dict[str, object], message: str) -> None:
    with pytest.raises(InputError) as err:
        check_feed(SPECS, feed)
    assert message in str(err.value)


def test_bytes_become_text_for_string_inputs() -> None:
    spec = (TensorSpec("s", "object", (2,)),)
    out = check_feed(spec, {"s": np.array([b"caf\xc3\xa9", "x"], dtype=object)})
    assert list(out["s"]) == ["café", "x"]
    out = check_feed(spec, {"s": np.array([b"ab", b"cd"])})
    assert list(out["s"]) == ["ab", "cd"]
