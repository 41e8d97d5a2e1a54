"""A whole run: every scenario and configuration over the subjects, then the report."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import duh
from duh.bench._inputs import Workload, make_workloads
from duh.bench._measure import Progress, find_peak, measure
from duh.bench._memory import peak_rss_mb
from duh.bench._profile import profile_subject
from duh.bench._report import (
    BenchReport,
    Measurement,
    PeakResult,
    ProfileResult,
    SubjectInfo,
    with_speedups,
)
from duh.bench._settings import BenchSettings
from duh.bench._subjects import LocalSubject, Subject
from duh.errors import ConfigError
from duh.host import host_info
from duh.runtime import read_samples

__all__ = ["run_subjects"]

log = logging.getLogger(__name__)

_MAX_DATA_SAMPLES = 4096


def _warnings(
    settings: BenchSettings, rows: Sequence[Measurement], peaks: Sequence[PeakResult]
) -> list[str]:
    out = []
    for m in rows:
        where = f"{m.subject} {m.scenario} {m.config}"
        if not m.stable:
            out.append(
                f"{where}: the median did not settle (last {settings.min_windows} window medians "
                f"within ±{m.window_spread:.1%}, need ±{settings.stability:.0%}, after {m.windows} "
                "windows): the machine was too noisy to trust this figure; rerun when it is "
                "quieter or with a longer --window"
            )
        if m.rejected or m.dropped:
            out.append(
                f"{where}: {m.rejected} requests rejected as overloaded, {m.dropped} dropped"
            )
    for p in peaks:
        if p.peak_qps == 0:
            out.append(
                f"{p.subject}: no arrival rate held p99 <= {p.latency_bound_ms:g} ms; the bound is "
                "below what one inference takes here"
            )
    return out


def _host() -> dict[str, Any]:
    host = host_info()
    return {
        "cpu": host.cpu_model,
        "cores": host.cores,
        "cpu_flags": host.notable_flags,
        "cuda": [d.name for d in host.cuda],
    }


def _profiles(
    subjects: Sequence[Subject],
    workload: Workload,
    settings: BenchSettings,
    progress: Progress | None,
) -> list[ProfileResult]:
    out = []
    for subject in subjects:
        if not isinstance(subject, LocalSubject):
            log.warning("--profile needs a local artifact; %s is behind a server", subject.name)
            continue
        if progress:
            progress(f"profiling {subject.name}")
        out.append(
            profile_subject(
                subject.path,
                subject.name,
                workload,
                settings.threads,
                settings.engine_options,
                settings.profile_runs,
            )
        )
    return out


def _info(
    subject: Subject,
    workloads: Sequence[Workload],
    settings: BenchSettings,
    progress: Progress | None,
) -> SubjectInfo:
    info = subject.info()
    if not settings.memory or not isinstance(subject, LocalSubject):
        return info
    if progress:
        progress(f"peak memory of {subject.name}")
    streams = max(settings.streams) if "multi-stream" in settings.scenarios else 1
    if "server" in settings.scenarios:
        streams = max(streams, settings.server_workers)
    feeds = [wl.feeds[0] for wl in workloads]
    peak = peak_rss_mb(subject.path, settings.threads, settings.engine_options, feeds, streams)
    return replace(info, peak_rss_mb=peak)


def _same_inputs(subjects: Sequence[Subject]) -> None:
    """Every subject takes the baseline's inputs (by name): one workload feeds them all."""
    first = subjects[0]
    want = sorted(s.name for s in first.inputs)
    for other in subjects[1:]:
        got = sorted(s.name for s in other.inputs)
        if got != want:
            raise ConfigError(
                f"{other.name} takes inputs {', '.join(got)}, not the baseline {first.name}'s "
                f"{', '.join(want)}; duh bench compares builds of one model: bench other models "
                "in a command each"
            )


def run_subjects(
    subjects: Sequence[Subject], settings: BenchSettings, progress: Progress | None = None
) -> BenchReport:
    """Measure ``subjects`` on every scenario of ``settings``; the first is the baseline."""
    settings.validate()
    specs = subjects[0].inputs
    _same_inputs(subjects)
    samples = None
    if settings.data is not None:
        limit = min(_MAX_DATA_SAMPLES, max(settings.batches, default=1) * 64)
        samples = read_samples(settings.data, specs, limit=limit)
    shapes = list(settings.shapes)
    single = make_workloads(specs, shapes, [None], settings.seed, samples, settings.feeds)
    rows: list[Measurement] = []
    peaks: list[PeakResult] = []
    measured: list[Workload] = list(single)
    for scenario in settings.scenarios:
        if scenario == "single-stream":
            for wl in single:
                rows += measure(subjects, scenario, wl, settings, progress=progress)
        elif scenario == "offline":
            offline = make_workloads(specs, shapes, list(settings.batches), settings.seed, samples,
                                     settings.feeds)
            for wl in offline:
                measured.append(wl)
                rows += measure(subjects, scenario, wl, settings, progress=progress)
        elif scenario == "multi-stream":
            for streams in settings.streams:
                for wl in single:
                    rows += measure(
                        subjects, scenario, wl, settings, streams=streams, progress=progress
                    )
        else:
            for qps in settings.qps:
                for wl in single:
                    rows += measure(
                        subjects,
                        scenario,
                        wl,
                        settings,
                        streams=settings.server_workers,
                        qps=qps,
                        progress=progress,
                    )
            if settings.find_peak:
                # With a mix of shapes, the search uses the mix (the last workload).
                peaks += [find_peak(s, single[-1], settings, progress) for s in subjects]
    profiles = _profiles(subjects, single[0], settings, progress) if settings.profile else []
    infos = [_info(s, measured, settings, progress) for s in subjects]
    final_rows, final_peaks = with_speedups(rows, peaks, subjects[0].name)
    return BenchReport(
        settings=settings.to_json(),
        host=_host(),
        subjects=tuple(infos),
        measurements=final_rows,
        peaks=final_peaks,
        profiles=tuple(profiles),
        warnings=tuple(_warnings(settings, final_rows, final_peaks)),
        duh_version=duh.__version__,
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
