"""``duh bench``: measure artifacts, plain ONNX models or served models, side by side.

Subjects are measured in one run, interleaved window by window, on MLPerf-style scenarios
(single-stream, offline, multi-stream, server), with warm-up and stability windows, and the
figures come back as a ``BenchReport`` (``to_json()`` is the ``--json`` document). This package
uses ``duh.runtime`` only, never the compiler.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from duh.bench._gates import GATE_EXIT_CODE, METRICS, Gate, GateResult, evaluate_gates, parse_gate
from duh.bench._http import HttpSubject
from duh.bench._inputs import Workload, group_shapes, make_workloads
from duh.bench._loop import Warmup
from duh.bench._measure import Progress
from duh.bench._plot import plot_report
from duh.bench._report import (
    HEADLINES,
    SCENARIOS,
    SCHEMA,
    BenchReport,
    Measurement,
    OpShare,
    PeakResult,
    ProfileResult,
    SubjectInfo,
)
from duh.bench._run import run_subjects
from duh.bench._settings import BenchSettings, parse_range
from duh.bench._stats import LatencyStats, percentile, summarize, window_stable
from duh.bench._subjects import LocalSubject, Subject, unique_names
from duh.errors import ConfigError

__all__ = [
    "GATE_EXIT_CODE",
    "HEADLINES",
    "METRICS",
    "SCENARIOS",
    "SCHEMA",
    "BenchReport",
    "BenchSettings",
    "Gate",
    "GateResult",
    "HttpSubject",
    "LatencyStats",
    "LocalSubject",
    "Measurement",
    "OpShare",
    "PeakResult",
    "ProfileResult",
    "Progress",
    "Subject",
    "SubjectInfo",
    "Warmup",
    "Workload",
    "bench",
    "bench_url",
    "evaluate_gates",
    "group_shapes",
    "make_workloads",
    "parse_gate",
    "parse_range",
    "percentile",
    "plot_report",
    "summarize",
    "window_stable",
]


def _close(subjects: Sequence[Subject]) -> None:
    for subject in subjects:
        subject.close()


def bench(
    paths: Sequence[str | Path],
    settings: BenchSettings | None = None,
    *,
    progress: Progress | None = None,
) -> BenchReport:
    """Measure artifacts (``NAME.duh``) and/or plain ``.onnx`` models; the first is the baseline
    every ``speedup`` compares against. Raises a ``DuhError`` for a broken artifact, a wrong
    ``--shape`` or unusable settings."""
    settings = settings or BenchSettings()
    settings.validate()
    if not paths:
        raise ConfigError("nothing to measure: give artifacts (NAME.duh) or .onnx models, or --url")
    names = unique_names([Path(p).name for p in paths])
    subjects: list[Subject] = []
    # One subject runs as a plain session would (the engine's spinning default); several are
    # interleaved, and an idle subject's spinning pool would take the cores of the one measured.
    spin = None if len(paths) == 1 else False
    try:
        for path, name in zip(paths, names, strict=True):
            if progress:
                progress(f"loading {name}")
            subjects.append(
                LocalSubject(Path(path), name, settings.threads, settings.engine_options, spin)
            )
        return run_subjects(subjects, settings, progress)
    finally:
        _close(subjects)


def bench_url(
    url: str,
    models: Sequence[str],
    settings: BenchSettings | None = None,
    *,
    version: str | None = None,
    binary: bool = True,
    progress: Progress | None = None,
) -> BenchReport:
    """Measure models behind an Open Inference Protocol server (duh serve, Triton) from the
    client side; the server's own statistics are added when it offers them."""
    settings = settings or BenchSettings()
    settings.validate()
    if not models:
        raise ConfigError("--url needs --model NAME (the served model to measure)")
    subjects: list[Subject] = []
    try:
        for model in models:
            if progress:
                progress(f"connecting to {url} for {model}")
            subjects.append(HttpSubject(url, model, version, binary))
        return run_subjects(subjects, settings, progress)
    finally:
        _close(subjects)
