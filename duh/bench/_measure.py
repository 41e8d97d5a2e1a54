"""Measuring subjects on one configuration: warm-up, interleaved windows, stability, figures.

Every subject warms up alone, then the subjects take turns
window by window, the order rotating each round, so drift on a shared machine hits all alike.
Rounds continue until the last ``min_windows`` window medians of every subject agree within
``stability`` (perf_analyzer's rule) or ``max_windows`` is reached; the figures come from those
last windows.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from duh.bench._inputs import Workload
from duh.bench._loop import Runner, Window, poisson_loop, streams_loop, warm_up
from duh.bench._report import Measurement, PeakResult
from duh.bench._settings import BenchSettings
from duh.bench._stats import percentile, relative_spread, summarize, window_stable
from duh.bench._subjects import LocalSubject, Subject, first_line
from duh.errors import InputError, TargetError

__all__ = ["Progress", "find_peak", "measure", "server_delta"]

log = logging.getLogger(__name__)

# Called with a short description of what is being measured now.
Progress = Callable[[str], None]
# find-peak: trials stop when the bracket is this narrow, relative to its top.
_PEAK_PRECISION = 0.03
_PEAK_MAX_TRIALS = 10
_PEAK_MIN_REQUESTS = 300


def _check_runs(subject: Subject, run: Runner, payloads: Sequence[Any], workload: Workload) -> None:
    """Run the first payload once: an input the engine refuses fails here, before any timing,
    naming the subject and the workload."""
    try:
        run(payloads[0])
    except TargetError as exc:  # what an engine raises for a feed it cannot run
        if not isinstance(subject, LocalSubject):
            raise  # a server's answer already says what failed
        shapes = workload.shape_text()
        raise InputError(
            f"{subject.name} failed on {workload.label}"
            + (f" ({shapes})" if shapes else "")
            + f": {first_line(exc)}; check --shape against the model's inputs"
        ) from None


def _window(
    run: Runner,
    payloads: Sequence[Any],
    settings: BenchSettings,
    streams: int,
    qps: float | None,
    seed: int,
) -> Window:
    if qps is not None:
        return poisson_loop(run, payloads, qps, settings.window_s, streams, seed)
    return streams_loop(run, payloads, streams, settings.window_s, settings.min_runs)


def server_delta(
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
) -> dict[str, float] | None:
    """Server-side means over a measurement from two cumulative stats snapshots."""
    if before is None or after is None:
        return None
    out: dict[str, float] = {}
    requests = after.get("success_count", 0) - before.get("success_count", 0)
    if requests <= 0:
        return None
    out["requests"] = float(requests)
    for key in ("queue", "compute_input", "compute_infer", "compute_output", "success"):
        ns = after.get(f"{key}_ns", 0) - before.get(f"{key}_ns", 0)
        if f"{key}_ns" in after:
            out[f"{key}_ms_mean"] = ns / requests / 1e6
    executions = after.get("execution_count", 0) - before.get("execution_count", 0)
    inferences = after.get("inference_count", 0) - before.get("inference_count", 0)
    if executions > 0 and inferences > 0:
        out["mean_batch"] = inferences / executions
    return out


def _row(
    subject: Subject,
    scenario: str,
    workload: Workload,
    windows: Sequence[Window],
    settings: BenchSettings,
    streams: int,
    qps: float | None,
    server: Mapping[str, float] | None,
) -> Measurement:
    used = list(windows[-settings.min_windows :])
    medians = [w.median_ms for w in windows]
    latencies = np.concatenate([w.latencies_ns for w in used]).astype(np.float64) / 1e6
    stats = summarize(latencies)
    elapsed = sum(w.elapsed_s for w in used)
    completed = sum(w.completed for w in used)
    per_s = completed / elapsed if elapsed > 0 else math.nan
    rejected = sum(w.rejected for w in used)
    dropped = sum(w.dropped for w in used)
    bound = settings.latency_bound_ms if qps is not None else None
    met = None
    if bound is not None:
        met = bool(stats.count and stats.p99_ms <= bound and not rejected and not dropped)
    offered = [w.offered_qps for w in used if w.offered_qps is not None]
    return Measurement(
        subject=subject.name,
        scenario=scenario,
        config=_label(scenario, workload, streams, qps),
        batch=workload.batch,
        streams=streams,
        latency=stats,
        inferences_per_s=per_s,
        samples_per_s=per_s * workload.batch,
        windows=len(windows),
        window_medians_ms=tuple(medians),
        window_spread=relative_spread(medians[-settings.min_windows :]),
        stable=window_stable(medians, settings.min_windows, settings.stability),
        qps=qps,
        offered_qps=float(np.mean(offered)) if offered else None,
        latency_bound_ms=bound,
        bound_met=met,
        rejected=rejected,
        dropped=dropped,
        server=server,
        samples_ms=latencies,
    )


def _label(scenario: str, workload: Workload, streams: int, qps: float | None) -> str:
    if qps is not None:
        return f"qps {qps:g} {workload.label}"
    if scenario == "multi-stream":
        return f"streams {streams} {workload.label}"
    return workload.label


def measure(
    subjects: Sequence[Subject],
    scenario: str,
    workload: Workload,
    settings: BenchSettings,
    *,
    streams: int = 1,
    qps: float | None = None,
    progress: Progress | None = None,
) -> list[Measurement]:
    """Measure every subject on ``workload``, interleaved window by window."""
    prepared = [s.payloads(workload) for s in subjects]
    runners = [s.runner() for s in subjects]
    for subject, run, payloads in zip(subjects, runners, prepared, strict=True):
        if progress:
            progress(f"{scenario} {workload.label}: warming up {subject.name}")
        _check_runs(subject, run, payloads, workload)
        warm_up(run, payloads, settings.warmup, streams)
    stats_before = [s.server_stats() for s in subjects]
    windows: list[list[Window]] = [[] for _ in subjects]
    count = len(subjects)
    for round_ in range(settings.max_windows):
        for k in range(count):
            i = (round_ + k) % count
            windows[i].append(
                _window(runners[i], prepared[i], settings, streams, qps, settings.seed + round_)
            )
        if progress:
            progress(f"{scenario} {workload.label}: window {round_ + 1}/{settings.max_windows}")
        if round_ + 1 >= settings.min_windows and all(
            window_stable([w.median_ms for w in ws], settings.min_windows, settings.stability)
            for ws in windows
        ):
            break
    stats_after = [s.server_stats() for s in subjects]
    return [
        _row(s, scenario, workload, ws, settings, streams, qps, server_delta(b, a))
        for s, ws, b, a in zip(subjects, windows, stats_before, stats_after, strict=True)
    ]


def _trial(
    run: Runner, payloads: Sequence[Any], settings: BenchSettings, qps: float, seed: int
) -> tuple[float, bool]:
    seconds = max(settings.window_s, min(_PEAK_MIN_REQUESTS / qps, 4 * settings.window_s))
    window = poisson_loop(run, payloads, qps, seconds, settings.server_workers, seed)
    p99 = percentile(window.latencies_ns, 99) / 1e6
    bound = settings.latency_bound_ms or math.inf
    met = window.completed > 0 and p99 <= bound and not window.rejected and not window.dropped
    return p99, met


def find_peak(
    subject: Subject,
    workload: Workload,
    settings: BenchSettings,
    progress: Progress | None = None,
) -> PeakResult:
    """Bisect the Poisson arrival rate for the highest one whose p99 holds the latency bound.

    The search starts from the closed-loop capacity with the same number of workers (no open
    loop can sustain more) and halves the bracket until it is within 3% or 10 trials ran.
    """
    assert settings.latency_bound_ms is not None
    payloads = subject.payloads(workload)
    run = subject.runner()
    _check_runs(subject, run, payloads, workload)
    warm_up(run, payloads, settings.warmup, settings.server_workers)
    capacity_window = streams_loop(
        run, payloads, settings.server_workers, settings.window_s, settings.min_runs
    )
    capacity = capacity_window.completed / capacity_window.elapsed_s
    lo, hi = 0.0, capacity * 1.05
    best_p99: float | None = None
    trials: list[tuple[float, float, bool]] = []
    for step in range(_PEAK_MAX_TRIALS):
        qps = (lo + hi) / 2
        if progress:
            progress(f"server find-peak {subject.name}: trying {qps:.1f} QPS")
        p99, met = _trial(run, payloads, settings, qps, settings.seed + step)
        trials.append((qps, p99, met))
        if met:
            lo, best_p99 = qps, p99
        else:
            hi = qps
        if lo > 0 and (hi - lo) / hi <= _PEAK_PRECISION:
            break
        if lo == 0 and hi < capacity * 0.02:
            break  # not even 2% of capacity holds the bound: it is below one inference's latency
    return PeakResult(
        subject=subject.name,
        latency_bound_ms=settings.latency_bound_ms,
        peak_qps=lo,
        p99_ms_at_peak=best_p99,
        capacity_qps=capacity,
        trials=tuple(trials),
    )
