"""``--profile``: per-operator times from the engine's own profiler, in a separate session.

Profiling slows inference, so it runs on a second session loaded with ``profile=True`` after the
timed measurement. ONNX Runtime's profile covers every run since load (read once at the end);
OpenVINO's counters hold the latest inference of each infer request, so they are read after
every run and summed here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from duh.bench._inputs import Workload
from duh.bench._report import OpShare, ProfileResult
from duh.runtime import OpTiming, check_feed, load

__all__ = ["aggregate", "profile_subject"]

# Engines whose op_profile() sums every run since load; the others report the latest run only.
_CUMULATIVE = frozenset({"onnxruntime"})
_SOURCE = {
    "onnxruntime": "ONNX Runtime profiler (kernel time per node)",
    "openvino": "OpenVINO performance counters (real time per layer)",
}


def aggregate(
    timings: Sequence[OpTiming], runs: int
) -> tuple[tuple[OpShare, ...], tuple[tuple[str, float, float], ...], float]:
    """Per-op mean time per inference, share of the total, and the same by op type."""
    total = sum(t.total_us for t in timings)
    ops = tuple(
        sorted(
            (
                OpShare(
                    t.name,
                    t.op_type,
                    t.total_us / runs,
                    t.total_us / total if total else 0.0,
                    t.calls,
                )
                for t in timings
            ),
            key=lambda o: o.us_per_run,
            reverse=True,
        )
    )
    by_type: dict[str, float] = {}
    for t in timings:
        by_type[t.op_type] = by_type.get(t.op_type, 0.0) + t.total_us
    types = tuple(
        sorted(
            ((op, us / runs, us / total if total else 0.0) for op, us in by_type.items()),
            key=lambda x: x[1],
            reverse=True,
        )
    )
    return ops, types, total / runs


def profile_subject(
    path: Path,
    name: str,
    workload: Workload,
    threads: int | None,
    options: Mapping[str, str],
    runs: int,
) -> ProfileResult:
    """Load ``path`` with profiling on, run the workload ``runs`` times, and total the ops."""
    session = load(path, threads=threads, profile=True, engine_options=dict(options))
    try:
        feeds = [check_feed(session.inputs, f) for f in workload.feeds]
        run = session.engine.run
        cumulative = session.engine_name in _CUMULATIVE
        totals: dict[str, list[float | str | int]] = {}
        count = max(1, runs)
        for i in range(count):
            run(feeds[i % len(feeds)])
            if not cumulative:
                for t in session.op_profile():
                    entry = totals.setdefault(t.name, [t.op_type, 0.0, 0])
                    entry[1] = float(entry[1]) + t.total_us
                    entry[2] = int(entry[2]) + t.calls
        if cumulative:
            timings = session.op_profile()
        else:
            timings = [OpTiming(n, str(op), float(us), int(c)) for n, (op, us, c) in totals.items()]
        engine = session.engine_name
    finally:
        session.close()
    # A fresh session: its profile holds exactly these ``count`` inferences.
    ops, by_type, total = aggregate(timings, count)
    return ProfileResult(
        subject=name,
        engine=engine,
        source=_SOURCE.get(engine, f"{engine} profiler"),
        runs=count,
        total_us_per_run=total,
        ops=ops,
        by_type=by_type,
    )
