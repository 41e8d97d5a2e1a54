"""Run one conformance case for some targets; one JSON line per event on file descriptor ``--fd``.

``python -m benchmarks._conformance_worker SUITE/NAME --targets ort,cpu,... --fd N``. For each
target it writes ``{"target": T, "event": "start"}``, then ``{"target": T, "event": "end",
"status": ...}``. The parent (``benchmarks.conformance``) times each target from its start line,
and records a worker that dies or hangs as ``crash`` or ``timeout`` of the target it had started.

Target ``ort`` runs ONNX Runtime itself on the source model: the ceiling. Every other target is
built with ``duh.build``, loaded with ``duh.load`` and run on the case's inputs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import onnx

from benchmarks._conformance_corpus import Case, DataSet, close_enough, find_case, load_data

CHECK_SAMPLES = 2
CALIB_SAMPLES = 8
SELECT_BUDGET_S = 0.2


def _traceback_tail(limit: int = 4000) -> str:
    return traceback.format_exc()[-limit:]


def _compare_fp32(
    names: Sequence[str], got: Sequence[Mapping[str, Any]], data: Sequence[DataSet]
) -> str:
    for i, (have, ds) in enumerate(zip(got, data, strict=True)):
        for name, want in zip(names, ds.outputs, strict=True):
            problem = close_enough(have[name] if isinstance(have, Mapping) else have, want)
            if problem:
                return f"data set {i}, output {name!r}: {problem}"
    return ""


class _Shipped:
    """The shipped outputs, played back as the reference session of duh's ``compare``."""

    def __init__(self, names: Sequence[str], data: Sequence[DataSet]) -> None:
        from duh.runtime import TensorSpec

        self.outputs = [TensorSpec(n, "float32", ()) for n in names]
        self._next = iter(data)

    def run(self, feed: Mapping[str, Any]) -> dict[str, Any]:
        ds = next(self._next)
        return dict(zip((o.name for o in self.outputs), ds.outputs, strict=True))


def run_ort(case: Case, data: Sequence[DataSet]) -> dict[str, Any]:
    """ONNX Runtime (CPU) on the source model: ``pass``, ``mismatch`` or ``fail``."""
    import onnxruntime as ort

    names = [
        o.name for o in onnx.load_model(str(case.model), load_external_data=False).graph.output
    ]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(case.model), options, providers=["CPUExecutionProvider"])
        got = [dict(zip(names, session.run(None, ds.inputs), strict=True)) for ds in data]
    # ORT raises its own pybind error classes (and TypeError/ValueError for feeds it cannot
    # convert); any failure of the ceiling is a fact to record, not a bug of the runner.
    except Exception as exc:  # noqa: BLE001
        return {"status": "fail", "detail": str(exc).strip().splitlines()[0][:300]}
    problem = _compare_fp32(names, got, data)
    return {"status": "mismatch" if problem else "pass", "detail": problem}


def _refused(exc: BaseException, phase: str) -> dict[str, Any]:
    text = str(exc).strip()
    return {
        "status": "refused",
        "phase": phase,
        "detail": text,
        "one_line": bool(text) and "\n" not in text,
        "error_class": type(exc).__name__,
        "exit_code": int(getattr(exc, "exit_code", 1)),
    }


def run_duh(case: Case, target: str, data: Sequence[DataSet], work: Path) -> dict[str, Any]:
    """Build ``case`` for ``target`` with duh, run the artifact on the data sets and compare."""
    import duh
    from duh.compiler.verify import compare, tolerance_for

    out = work / f"{target.replace(':', '_')}.duh"
    kwargs: dict[str, Any] = {"check_samples": CHECK_SAMPLES, "select_budget_s": SELECT_BUDGET_S}
    if target.endswith("int8"):
        kwargs.update(calib="synthetic", calib_samples=CALIB_SAMPLES)
    info: dict[str, Any] = {}
    try:
        try:
            result = duh.build(case.model, target, out, **kwargs)
        except duh.DuhError as exc:
            if "--check-data" not in str(exc):
                raise
            # What a user does when duh asks for sample inputs: give the shipped ones, each
            # with a leading samples axis of one.
            check = work / "check.npz"
            np.savez(check, **{k: v[None] for k, v in data[0].inputs.items()})
            info["check_data"] = True
            result = duh.build(case.model, target, out, check_data=check, **kwargs)
    except duh.DuhError as exc:
        return {**info, **_refused(exc, "build")}
    # Anything else escaping duh.build is a duh bug: record it with its traceback.
    except Exception:  # noqa: BLE001
        return {"status": "crash", "phase": "build", "detail": _traceback_tail()}
    chosen = result.chosen
    info["chosen"] = f"{chosen.engine}:{chosen.device}-{chosen.precision}" if chosen else None
    precision = chosen.precision if chosen else "fp32"
    names = [o.name for o in result.source.outputs]  # a cached build keeps no model
    try:
        session = duh.load(out)
        if precision == "fp32":
            got = [session.run(ds.inputs) for ds in data]
            problem = _compare_fp32(names, got, data)
        else:
            report = compare(
                _Shipped(names, data),  # type: ignore[arg-type]
                session,
                [ds.inputs for ds in data],
                precision,
                tolerance_for(precision),
                "shipped test data",
            )
            problem = "" if report.passed else report.failure_text()
    except duh.DuhError as exc:
        return {**info, **_refused(exc, "run")}
    except Exception:  # noqa: BLE001
        return {**info, "status": "crash", "phase": "run", "detail": _traceback_tail()}
    return {**info, "status": "mismatch" if problem else "pass", "detail": problem}


def _emit(stream: TextIO, record: Mapping[str, Any]) -> None:
    stream.write(json.dumps(record) + "\n")
    stream.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the case for each target and stream the results."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("case", help="suite/name")
    parser.add_argument("--targets", required=True, help="comma-separated; 'ort' is the ceiling")
    parser.add_argument("--fd", type=int, required=True, help="where the JSON lines go")
    args = parser.parse_args(argv)
    stream = os.fdopen(args.fd, "w")
    case = find_case(args.case)
    data = load_data(case)
    with tempfile.TemporaryDirectory(prefix="duh-conformance-") as tmp:
        for target in args.targets.split(","):
            _emit(stream, {"target": target, "event": "start"})
            started = time.perf_counter()
            work = Path(tmp) / target.replace(":", "_")
            work.mkdir()
            record = run_ort(case, data) if target == "ort" else run_duh(case, target, data, work)
            record.update(
                target=target, event="end", seconds=round(time.perf_counter() - started, 2)
            )
            _emit(stream, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
