"""Conformance: build ONNX's own backend test models with duh and check them on the shipped data.

The corpus is the test data inside the installed onnx wheel (``onnx/backend/test/data``: suites
``simple``, ``light``, ``pytorch-converted``, ``pytorch-operator``). For every case and target,
a worker process builds it with ``duh.build`` (verification on, 2 check samples; ``cpu-int8``
calibrated on synthetic data), loads the artifact with ``duh.load``, runs it on the shipped
inputs and compares with the shipped outputs: elementwise fp32 tolerance (rtol 1e-3, atol 1e-4)
for fp32 targets, duh's own bf16/int8 criteria otherwise. A case ends ``pass``, ``mismatch``,
``refused`` (duh's one-line error), ``crash`` (anything else: a duh bug) or ``timeout``.

ONNX Runtime running the source model is the ceiling: cases it fails or mismatches are listed
apart and left out of the pass-rate denominators.

    python -m benchmarks.conformance [--targets T,...] [--suites S,...] [--filter SUBSTR]
                                     [--json FILE] [--jobs N] [--timeout S]

Exit status 1 when any case crashed or timed out.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks._conformance_corpus import SUITES, Case, discover
from benchmarks._subprocess import kill_group, read_lines

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("cpu", "openvino:cpu-fp32", "openvino:cpu-bf16", "tvm:cpu", "cpu-int8")
STATUSES = ("pass", "mismatch", "refused", "crash", "timeout")
CEILING = "ort"


def _stderr_tail(err: Any, limit: int = 2000) -> str:
    err.seek(0)
    return err.read().decode("utf-8", "replace")[-limit:]



def _one_worker(case: Case, targets: Sequence[str], timeout: float) -> dict[str, dict[str, Any]]:
    """Run a worker on ``targets`` until it ends, dies or hangs; the results it got to."""
    results: dict[str, dict[str, Any]] = {}
    read_fd, write_fd = os.pipe()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks._conformance_worker",
                case.key,
                "--targets",
                ",".join(targets),
                "--fd",
                str(write_fd),
            ],
            cwd=ROOT,
            pass_fds=(write_fd,),
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            start_new_session=True,
        )
        os.close(write_fd)
        lines: queue.Queue[str | None] = queue.Queue()
        reader = threading.Thread(target=read_lines, args=(read_fd, lines), daemon=True)
        reader.start()
        current = targets[0]
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = lines.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                kill_group(proc)
                results[current] = {"status": "timeout", "detail": f"no result in {timeout:g} s"}
                break
            if line is None:
                code = proc.wait()
                if current not in results:
                    results[current] = {
                        "status": "crash",
                        "phase": "worker",
                        "detail": f"worker exited with {code} before a result; stderr: "
                        + _stderr_tail(err),
                    }
                break
            record = json.loads(line)
            if record["event"] == "start":
                current = record["target"]
                deadline = time.monotonic() + timeout
            else:
                results[record["target"]] = record
        reader.join(timeout=5)
    return results


def run_case(case: Case, targets: Sequence[str], timeout: float) -> dict[str, dict[str, Any]]:
    """Every target's record for ``case``; a worker that dies or hangs is restarted after it."""
    results: dict[str, dict[str, Any]] = {}
    while remaining := [t for t in targets if t not in results]:
        results.update(_one_worker(case, remaining, timeout))
    return results


def summarize(
    cases: Mapping[str, Mapping[str, Mapping[str, Any]]], targets: Sequence[str]
) -> dict[str, Any]:
    """Per target: counts by status, and the pass rate over the cases ONNX Runtime passes."""
    ceiling_ok = [k for k, r in cases.items() if r.get(CEILING, {}).get("status") == "pass"]
    rows = {}
    for target in targets:
        counts = {s: 0 for s in STATUSES}
        for record in cases.values():
            if target in record:
                counts[record[target]["status"]] += 1
        passed = sum(cases[k][target]["status"] == "pass" for k in ceiling_ok if target in cases[k])
        rows[target] = {
            "cases": sum(counts.values()),
            **counts,
            "ort_passing": len(ceiling_ok),
            "pass_pct": round(100.0 * passed / len(ceiling_ok), 1) if ceiling_ok else None,
        }
    ceiling_failed = {
        k: f"{r[CEILING]['status']}: {r[CEILING].get('detail', '')}"
        for k, r in cases.items()
        if CEILING in r and r[CEILING]["status"] != "pass"
    }
    return {"targets": rows, "ort_not_passing": ceiling_failed}


def print_report(summary: Mapping[str, Any], cases: Mapping[str, Mapping[str, Any]]) -> None:
    """The per-target table, then what ORT fails, then every case a target did not pass."""
    head = f"{'target':<20}{'cases':>6}" + "".join(f"{s:>10}" for s in STATUSES) + f"{'pass%':>8}"
    print(head)
    print("-" * len(head))
    for target, row in summary["targets"].items():
        pct = "-" if row["pass_pct"] is None else f"{row['pass_pct']:.1f}"
        print(
            f"{target:<20}{row['cases']:>6}"
            + "".join(f"{row[s]:>10}" for s in STATUSES)
            + f"{pct:>8}"
        )
    n_ok = next(iter(summary["targets"].values()), {}).get("ort_passing", 0)
    print(f"(pass% counts the {n_ok} cases ONNX Runtime itself passes)")
    if summary["ort_not_passing"]:
        print(
            f"\nONNX Runtime does not pass ({len(summary['ort_not_passing'])}, left out of pass%):"
        )
        for key, why in sorted(summary["ort_not_passing"].items()):
            print(f"  {key}: {why[:160]}")
    for target in summary["targets"]:
        bad = [(k, r[target]) for k, r in sorted(cases.items()) if r[target]["status"] != "pass"]
        if bad:
            print(f"\n{target}: not passing")
            for key, rec in bad:
                detail = " ".join(str(rec.get("detail", "")).split())
                # A traceback's last line says what broke; an error message's first words do.
                shown = detail[-220:] if rec["status"] == "crash" else detail[:220]
                print(f"  {rec['status']:<9}{key}: {shown}")


def write_json(
    path: Path,
    suites: Sequence[str],
    filter_text: str,
    cases: Mapping[str, Mapping[str, Any]],
    targets: Sequence[str],
) -> None:
    """Every record and the summary, written atomically to ``path``."""
    import onnx

    import duh

    report = {
        "duh": duh.__version__,
        "onnx": onnx.__version__,
        "suites": list(suites),
        "filter": filter_text,
        "summary": summarize(cases, targets),
        "cases": cases,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(path.name + ".part")
    staged.write_text(json.dumps(report, indent=1) + "\n")
    staged.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the corpus, print the table, write the JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated duh targets")
    parser.add_argument("--suites", default=",".join(SUITES), help=f"comma-separated, of {SUITES}")
    parser.add_argument("--filter", default="", help="only cases whose suite/name holds this")
    parser.add_argument("--json", type=Path, help="write every record and the summary here")
    parser.add_argument("--jobs", type=int, default=1, help="cases run at once (default 1)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per case and target")
    parser.add_argument("--report", type=Path, help="print the table of a JSON written before")
    args = parser.parse_args(argv)
    if args.report:
        saved = json.loads(args.report.read_text())
        print_report(summarize(saved["cases"], list(saved["summary"]["targets"])), saved["cases"])
        return 0
    suites = [s for s in args.suites.split(",") if s]
    unknown = sorted(set(suites) - set(SUITES))
    if unknown:
        parser.error(f"unknown suites {unknown}; choose from {list(SUITES)}")
    targets = [t for t in args.targets.split(",") if t]
    selected = [c for c in discover(suites) if args.filter in c.key]
    if not selected:
        parser.error(f"no case of {suites} matches --filter {args.filter!r}")
    print(
        f"{len(selected)} cases x {len(targets)} targets (+ ONNX Runtime), {args.jobs} at once",
        flush=True,
    )
    started = time.perf_counter()
    cases: dict[str, dict[str, Any]] = {}
    lock = threading.Lock()

    def one(case: Case) -> None:
        records = run_case(case, [CEILING, *targets], args.timeout)
        states = " ".join(f"{t}={records[t]['status']}" for t in [CEILING, *targets])
        print(f"  {case.key}: {states}", flush=True)
        with lock:
            cases[case.key] = records
            if args.json:  # after every case, so that an interrupted run keeps what it did
                write_json(args.json, suites, args.filter, dict(sorted(cases.items())), targets)

    # The light CNNs take minutes each: run them last, after the quick suites.
    order = sorted(selected, key=lambda c: c.suite == "light")
    with ThreadPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
        list(pool.map(one, order))
    cases = dict(sorted(cases.items()))
    summary = summarize(cases, targets)
    print(f"\nran in {time.perf_counter() - started:.0f} s\n")
    print_report(summary, cases)
    broken = sum(summary["targets"][t]["crash"] + summary["targets"][t]["timeout"] for t in targets)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
