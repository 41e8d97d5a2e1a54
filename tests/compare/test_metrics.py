"""The numbers of one output's comparison, on arrays whose differences are known."""

from __future__ import annotations

import numpy as np
import pytest

from duh.compare import Tolerance, compare_output, default_tolerance
from duh.compare._metrics import EXACT, loosest, with_overrides

FP32 = default_tolerance("fp32")
INT8 = default_tolerance("int8")


def _logits(seed: int, feeds: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((1, 10)).astype(np.float32) * 5 for _ in range(feeds)]


def test_identical_outputs_pass_with_zero_error() -> None:
    refs = _logits(0)
    out = compare_output("logits", refs, [r.copy() for r in refs], FP32)
    assert out.passed and out.reason == "within tolerance"
    assert out.max_abs == out.mean_abs == out.max_rel == 0.0
    assert out.cosine == pytest.approx(1.0) and out.top1 == 1.0
    assert out.mismatched == 0 and out.worst == () and out.elements == 40


def test_one_changed_element_is_the_worst_with_its_feed_and_index() -> None:
    refs = _logits(1)
    gots = [r.copy() for r in refs]
    gots[2][0, 7] += 0.5
    gots[0][0, 3] += 0.01
    out = compare_output("logits", refs, gots, FP32, worst=5)
    assert not out.passed and out.mismatched == 1
    assert out.max_abs == pytest.approx(0.5, rel=1e-5)
    assert out.mean_abs == pytest.approx(0.51 / 40, rel=1e-4)
    scale = max(float(np.abs(r).max()) for r in refs)
    assert out.max_rel == pytest.approx(0.5 / scale, rel=1e-4)
    first, second = out.worst
    assert (first.feed, first.index) == (2, (0, 7))
    assert first.reference == pytest.approx(float(refs[2][0, 7]))
    assert first.subject == pytest.approx(float(refs[2][0, 7]) + 0.5, rel=1e-6)
    assert (second.feed, second.index) == (0, (0, 3))
    assert "1 of 40 elements out of tolerance" in out.reason


def test_int8_tolerance_judges_by_cosine_and_top1_not_elementwise() -> None:
    refs = _logits(2, feeds=20)
    noisy = [r + np.random.default_rng(3).normal(0, 0.05, r.shape).astype(np.float32) for r in refs]
    assert compare_output("y", refs, noisy, INT8).passed
    assert compare_output("y", refs, noisy, INT8).mismatched is None
    assert not compare_output("y", refs, noisy, FP32).passed
    # Shuffled classes: the cosine and top-1 fall.
    shuffled = [r[:, ::-1].copy() for r in refs]
    out = compare_output("y", refs, shuffled, INT8)
    assert not out.passed and "top-1 agreement" in out.reason and "cosine" in out.reason


def test_top1_only_for_outputs_that_look_like_class_scores() -> None:
    maps = [np.random.default_rng(4).standard_normal((1, 3, 4, 4)) for _ in range(2)]
    assert compare_output("map", maps, maps, FP32).top1 is None
    scores = [np.full((1, 2, 5), 0.2) for _ in range(2)]
    assert compare_output("probs", scores, scores, FP32).top1 == 1.0


def test_nan_where_the_reference_has_a_number_fails() -> None:
    refs = [np.array([[1.0, np.nan, 3.0]], np.float32)]
    same = compare_output("y", refs, [refs[0].copy()], FP32)
    assert same.passed and same.max_abs == 0.0
    gots = [np.array([[np.nan, np.nan, 3.0]], np.float32)]
    out = compare_output("y", refs, gots, FP32)
    assert not out.passed and "NaN or Inf" in out.reason
    assert out.worst[0].index == (0, 0) and out.to_json()["max_abs"] == "inf"


def test_a_shape_change_fails_and_says_where() -> None:
    out = compare_output("y", [np.zeros((1, 4))], [np.zeros((1, 5))], FP32)
    assert not out.passed
    assert out.reason == "feed 0: shape [1, 5] differs from the reference's [1, 4]"


def test_integer_and_string_outputs_must_be_equal() -> None:
    ids = [np.array([3, 1, 2])]
    assert compare_output("ids", ids, [np.array([3, 1, 2])], EXACT).passed
    out = compare_output("ids", ids, [np.array([3, 0, 2])], EXACT)
    assert not out.passed and out.mismatched == 1 and out.worst[0].index == (1,)
    words = [np.array(["a", "b"], dtype=object)]
    assert compare_output("w", words, [np.array(["a", "b"])], EXACT).passed
    bad = compare_output("w", words, [np.array(["a", "c"], dtype=object)], EXACT)
    assert not bad.passed and bad.reason == "1 of 2 elements differ"


def test_the_looser_precision_wins_whole_and_overrides_apply() -> None:
    assert loosest(FP32, INT8) == INT8 and loosest(INT8, FP32) == INT8
    assert loosest(FP32, default_tolerance("bf16")) == default_tolerance("bf16")
    tight = with_overrides(INT8, {"atol": 1e-3})
    assert tight.elementwise and tight.atol == 1e-3 and tight.min_top1 == INT8.min_top1
    assert with_overrides(FP32, {"min_cosine": 0.5}) == Tolerance(1e-4, 1e-3, 0.5)
    assert with_overrides(FP32, {}) is FP32
