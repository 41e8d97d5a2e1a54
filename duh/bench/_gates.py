"""CI gates: ``--fail-if 'p99_ms>20' --fail-if 'speedup<1.5'`` checked against a report.

A gate ``[SUBJECT:]METRIC OP VALUE`` fails when any result row (of SUBJECT, when named) has a
figure that makes the comparison true, or when no row has that figure at all (a gate that
checks nothing must not pass silently). ``speedup`` exists only on rows after the first subject.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from duh.bench._report import BenchReport
from duh.errors import ConfigError

__all__ = ["GATE_EXIT_CODE", "METRICS", "Gate", "GateResult", "evaluate_gates", "parse_gate"]

# The exit code of `duh bench` when a gate fails (errors use 1-9).
GATE_EXIT_CODE = 10

_ROW_METRICS = (
    "min_ms",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "mean_ms",
    "std_ms",
    "cv",
    "inferences_per_s",
    "throughput",
    "samples_per_s",
    "speedup",
    "window_spread",
    "offered_qps",
    "rejected",
    "dropped",
)
_SUBJECT_METRICS = ("peak_rss_mb",)
_PEAK_METRICS = ("peak_qps", "peak_speedup")
METRICS = _ROW_METRICS + _SUBJECT_METRICS + _PEAK_METRICS
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
}
_PATTERN = re.compile(
    r"^\s*(?:(?P<subject>.+):)?\s*(?P<metric>[a-z0-9_]+)\s*(?P<op>>=|<=|==|!=|>|<)\s*"
    r"(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Gate:
    """A parsed ``--fail-if`` expression."""

    text: str
    subject: str | None
    metric: str
    op: str
    value: float

    def trips(self, figure: float) -> bool:
        """Whether ``figure`` makes the gate fail (NaN always does)."""
        return math.isnan(figure) or _OPS[self.op](figure, self.value)


@dataclass(frozen=True, slots=True)
class GateResult:
    """A gate's verdict, with the rows that tripped it."""

    gate: Gate
    passed: bool
    checked: int
    failures: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        """The form in the JSON report."""
        return {
            "gate": self.gate.text,
            "passed": self.passed,
            "checked": self.checked,
            "failures": list(self.failures),
        }


def parse_gate(text: str) -> Gate:
    """Parse ``[SUBJECT:]METRIC OP VALUE``; a ``ConfigError`` names the metrics on a typo."""
    match = _PATTERN.match(text)
    if match is None:
        raise ConfigError(
            f"--fail-if {text!r} is not [SUBJECT:]METRIC OP VALUE (e.g. 'p99_ms>20', "
            "'B.duh:speedup<1.5'); OP is one of > >= < <= == !="
        )
    metric = match.group("metric").lower()
    if metric not in METRICS:
        raise ConfigError(
            f"--fail-if {text!r}: unknown metric {metric!r}; the metrics are {', '.join(METRICS)}"
        )
    subject = match.group("subject")
    return Gate(
        text,
        subject.strip() if subject else None,
        metric,
        match.group("op"),
        float(match.group("value")),
    )


def _figures(report: BenchReport, gate: Gate) -> list[tuple[str, float]]:
    """Every (row description, figure) the gate applies to."""
    keep = (lambda name: name == gate.subject) if gate.subject else (lambda name: True)
    if gate.metric in _SUBJECT_METRICS:
        return [
            (s.name, s.peak_rss_mb)
            for s in report.subjects
            if keep(s.name) and s.peak_rss_mb is not None
        ]
    if gate.metric in _PEAK_METRICS:
        attr = "speedup" if gate.metric == "peak_speedup" else "peak_qps"
        first = report.peaks[0].subject if attr == "speedup" and report.peaks else None
        return [
            (f"{p.subject} server find-peak", float(getattr(p, attr)))
            for p in report.peaks
            if keep(p.subject) and getattr(p, attr) is not None and p.subject != first
        ]
    out = []
    # The baseline's speedup is 1 by definition: speedup gates judge the other subjects.
    baseline = report.subjects[0].name if gate.metric == "speedup" and report.subjects else None
    for m in report.measurements:
        figure = m.metric(gate.metric)
        if keep(m.subject) and figure is not None and m.subject != baseline:
            out.append((f"{m.subject} {m.scenario} {m.config}", figure))
    return out


def evaluate_gates(report: BenchReport, gates: Sequence[Gate]) -> list[GateResult]:
    """Check each gate against the report."""
    results = []
    for gate in gates:
        figures = _figures(report, gate)
        if not figures:
            where = f" for subject {gate.subject!r}" if gate.subject else ""
            reason = f"no result has {gate.metric}{where}"
            if gate.metric == "speedup":
                reason += " (speedup needs a second subject to compare with the first)"
            results.append(GateResult(gate, False, 0, (reason,)))
            continue
        failures = tuple(
            f"{where}: {gate.metric} = {figure:.6g}"
            for where, figure in figures
            if gate.trips(figure)
        )
        results.append(GateResult(gate, not failures, len(figures), failures))
    return results
