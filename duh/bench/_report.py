"""The results of a benchmark run and their JSON form (schema ``duh.bench/1``).

Each scenario has a headline figure, and ``speedup`` compares every subject's headline with the
first subject's on the same configuration, oriented so that above 1 means better than the first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from duh.bench._stats import LatencyStats

__all__ = [
    "HEADLINES",
    "SCENARIOS",
    "SCHEMA",
    "BenchReport",
    "Measurement",
    "OpShare",
    "PeakResult",
    "ProfileResult",
    "SubjectInfo",
    "with_speedups",
]

SCHEMA = "duh.bench/1"
SCENARIOS = ("single-stream", "offline", "multi-stream", "server")
# The headline metric of each scenario, and whether higher is better.
HEADLINES: Mapping[str, tuple[str, bool]] = {
    "single-stream": ("p90_ms", False),
    "offline": ("samples_per_s", True),
    "multi-stream": ("samples_per_s", True),
    "server": ("p99_ms", False),
}


def _num(value: float | None, digits: int = 6) -> float | None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return round(float(value), digits)


@dataclass(frozen=True, slots=True)
class SubjectInfo:
    """What was measured: an artifact, a plain ONNX model, or a model behind a server URL."""

    name: str
    kind: str
    location: str
    engine: str
    target: str
    threads: int | None
    options: Mapping[str, str] = field(default_factory=dict)
    peak_rss_mb: float | None = None
    load_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The form in the JSON report."""
        return {
            "name": self.name,
            "kind": self.kind,
            "location": self.location,
            "engine": self.engine,
            "target": self.target,
            "threads": self.threads,
            "options": dict(self.options),
            "peak_rss_mb": _num(self.peak_rss_mb, 3),
            "load_s": _num(self.load_s, 4),
        }


@dataclass(frozen=True, slots=True)
class Measurement:
    """One subject on one scenario configuration."""

    subject: str
    scenario: str
    config: str
    batch: float
    streams: int
    latency: LatencyStats
    inferences_per_s: float
    samples_per_s: float
    windows: int
    window_medians_ms: tuple[float, ...]
    window_spread: float
    stable: bool
    qps: float | None = None
    offered_qps: float | None = None
    latency_bound_ms: float | None = None
    bound_met: bool | None = None
    rejected: int = 0
    dropped: int = 0
    server: Mapping[str, float] | None = None
    speedup: float | None = None
    samples_ms: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)

    def metric(self, name: str) -> float | None:
        """A figure by the name gates and the JSON use (``p99_ms``, ``samples_per_s``, ...)."""
        if hasattr(self.latency, name):
            return float(getattr(self.latency, name))
        value = {
            "inferences_per_s": self.inferences_per_s,
            "throughput": self.inferences_per_s,
            "samples_per_s": self.samples_per_s,
            "speedup": self.speedup,
            "window_spread": self.window_spread,
            "offered_qps": self.offered_qps,
            "rejected": float(self.rejected),
            "dropped": float(self.dropped),
        }.get(name)
        return None if value is None else float(value)

    def headline(self) -> float:
        """The scenario's headline figure."""
        value = self.metric(HEADLINES[self.scenario][0])
        return math.nan if value is None else value

    def to_json(self) -> dict[str, Any]:
        """Every figure of this row."""
        return {
            "subject": self.subject,
            "scenario": self.scenario,
            "config": self.config,
            "batch": self.batch,
            "streams": self.streams,
            "latency_ms": {
                k.removesuffix("_ms"): v for k, v in self.latency.to_json().items() if k != "cv"
            },
            "cv": _num(self.latency.cv),
            "throughput": {
                "inferences_per_s": _num(self.inferences_per_s, 3),
                "samples_per_s": _num(self.samples_per_s, 3),
            },
            "stability": {
                "windows": self.windows,
                "window_medians_ms": [_num(m) for m in self.window_medians_ms],
                "spread": _num(self.window_spread),
                "stable": self.stable,
            },
            "server_scenario": None
            if self.qps is None
            else {
                "target_qps": _num(self.qps, 3),
                "offered_qps": _num(self.offered_qps, 3),
                "latency_bound_ms": self.latency_bound_ms,
                "bound_met": self.bound_met,
                "rejected": self.rejected,
                "dropped": self.dropped,
            },
            "server_side": None
            if self.server is None
            else {k: _num(v) for k, v in self.server.items()},
            "headline": {"metric": HEADLINES[self.scenario][0], "value": _num(self.headline())},
            "speedup": _num(self.speedup),
        }


@dataclass(frozen=True, slots=True)
class PeakResult:
    """The highest Poisson QPS at which a subject's p99 latency held the bound."""

    subject: str
    latency_bound_ms: float
    peak_qps: float
    p99_ms_at_peak: float | None
    capacity_qps: float
    trials: tuple[tuple[float, float, bool], ...]
    speedup: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The form in the JSON report."""
        return {
            "subject": self.subject,
            "latency_bound_ms": self.latency_bound_ms,
            "peak_qps": _num(self.peak_qps, 3),
            "p99_ms_at_peak": _num(self.p99_ms_at_peak),
            "closed_loop_capacity_qps": _num(self.capacity_qps, 3),
            "trials": [
                {"qps": _num(q, 3), "p99_ms": _num(p), "bound_met": ok} for q, p, ok in self.trials
            ],
            "speedup": _num(self.speedup),
        }


@dataclass(frozen=True, slots=True)
class OpShare:
    """One operator's mean time per inference and its share of all operators' time."""

    name: str
    op_type: str
    us_per_run: float
    share: float
    calls: int


@dataclass(frozen=True, slots=True)
class ProfileResult:
    """Per-operator times of one subject, from the engine's own profiler."""

    subject: str
    engine: str
    source: str
    runs: int
    total_us_per_run: float
    ops: tuple[OpShare, ...]
    by_type: tuple[tuple[str, float, float], ...]

    def to_json(self) -> dict[str, Any]:
        """The form in the JSON report (every operator, not only the top ones)."""
        return {
            "subject": self.subject,
            "engine": self.engine,
            "source": self.source,
            "runs": self.runs,
            "total_us_per_run": _num(self.total_us_per_run, 3),
            "ops": [
                {
                    "name": o.name,
                    "op_type": o.op_type,
                    "us_per_run": _num(o.us_per_run, 3),
                    "share": _num(o.share),
                    "calls": o.calls,
                }
                for o in self.ops
            ],
            "by_type": [
                {"op_type": t, "us_per_run": _num(us, 3), "share": _num(sh)}
                for t, us, sh in self.by_type
            ],
        }


@dataclass(frozen=True, slots=True)
class BenchReport:
    """Everything a run measured, with the settings and host it ran on."""

    settings: Mapping[str, Any]
    host: Mapping[str, Any]
    subjects: tuple[SubjectInfo, ...]
    measurements: tuple[Measurement, ...]
    peaks: tuple[PeakResult, ...] = ()
    profiles: tuple[ProfileResult, ...] = ()
    warnings: tuple[str, ...] = ()
    duh_version: str = ""
    created: str = ""

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` document."""
        return {
            "schema": SCHEMA,
            "duh_version": self.duh_version,
            "created": self.created,
            "host": dict(self.host),
            "settings": dict(self.settings),
            "subjects": [s.to_json() for s in self.subjects],
            "results": [m.to_json() for m in self.measurements],
            "peaks": [p.to_json() for p in self.peaks],
            "profiles": [p.to_json() for p in self.profiles],
            "warnings": list(self.warnings),
        }


def _ratio(mine: float, base: float, higher_is_better: bool) -> float | None:
    if not (math.isfinite(mine) and math.isfinite(base)) or mine <= 0 or base <= 0:
        return None
    return mine / base if higher_is_better else base / mine


def with_speedups(
    measurements: Sequence[Measurement], peaks: Sequence[PeakResult], first: str
) -> tuple[tuple[Measurement, ...], tuple[PeakResult, ...]]:
    """Fill ``speedup`` against subject ``first`` on the same scenario and configuration."""
    base = {(m.scenario, m.config): m for m in measurements if m.subject == first}
    rows = []
    for m in measurements:
        ref = base.get((m.scenario, m.config))
        speedup = None
        if ref is not None:
            speedup = _ratio(m.headline(), ref.headline(), HEADLINES[m.scenario][1])
        rows.append(replace(m, speedup=speedup))
    base_peak = next((p for p in peaks if p.subject == first), None)
    out_peaks = [
        replace(
            p, speedup=None if base_peak is None else _ratio(p.peak_qps, base_peak.peak_qps, True)
        )
        for p in peaks
    ]
    return tuple(rows), tuple(out_peaks)
