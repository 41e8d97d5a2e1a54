"""The interleaved timer the build's selection and the benchmarks share."""

from __future__ import annotations

import pytest

from duh.runtime import measure_interleaved


def test_rounds_interleave_every_subject_on_the_same_feed() -> None:
    calls: list[tuple[str, int]] = []
    subjects = [lambda f, n=n: calls.append((n, f)) for n in ("a", "b", "c")]
    timings = measure_interleaved(subjects, [0, 1], warmup=2, rounds=4, max_rounds=4)
    assert timings.rounds == 4
    assert [len(s) for s in timings.samples_ms] == [4, 4, 4]
    assert all(t >= 0 for s in timings.samples_ms for t in s)
    assert len(timings.medians_ms) == 3
    timed = calls[6:]  # after two warm-up calls each
    assert [n for n, _ in timed] == ["a", "b", "c"] * 4
    assert [f for _, f in timed] == [0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1]


def test_rotation_starts_each_round_at_the_next_subject() -> None:
    calls: list[str] = []
    subjects = [lambda f, n=n: calls.append(n) for n in ("a", "b", "c")]
    measure_interleaved(subjects, [None], warmup=0, rounds=3, max_rounds=3, rotate=True)
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]


def test_round_s_repeats_fast_subjects_up_to_the_cap() -> None:
    timings = measure_interleaved(
        [lambda f: None], [None], warmup=0, rounds=2, max_rounds=2, round_s=1.0, max_repeats=7
    )
    assert len(timings.samples_ms[0]) == 14


def test_nothing_to_time_is_a_bug() -> None:
    with pytest.raises(ValueError, match="at least one call"):
        measure_interleaved([], [None])
