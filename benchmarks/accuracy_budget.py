"""Accuracy budgets: plain INT8 vs budgeted INT8 (``--max-drop``) on ONNX Runtime and OpenVINO.

The model is ``fixtures/outlier_cnn.onnx`` (a digits CNN with one outlier channel that
per-tensor INT8 wrecks; fixtures/make_outlier_cnn.py). For each engine it builds fp32, plain
INT8 and INT8 under a top-1 budget (``--eval digits_test.npz --labels label --max-drop 0.005``),
measures top-1 of every artifact on the 540 test digits through ``duh.load``, and times each
engine's three artifacts interleaved in one run (batch 64, 2 threads, medians): the budgeted
build against fp32 and against plain INT8 on the same engine. It also reports the share of the
quantized layers the budget kept in float and the build's rounds.

    python -m benchmarks.accuracy_budget [--quick] [--json out.json] [--max-drop 0.005]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from duh.runtime import measure_interleaved

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MODEL = FIXTURES / "outlier_cnn.onnx"
CALIB = FIXTURES / "digits_calib.npz"
TEST = FIXTURES / "digits_test.npz"
THREADS = 2
# Timed at batch 64: at batch 1 this model runs in about 0.1 ms, where per-call overhead, not
# arithmetic, is what a clock sees.
BATCH = 64
ENGINES = ("onnxruntime", "openvino")


def _top1(session: Any, x: np.ndarray, y: np.ndarray) -> float:
    got = [int(np.argmax(session.run({"input": x[i : i + 1]})["logits"])) for i in range(len(x))]
    return float(np.mean(np.asarray(got) == y))


def main() -> int:
    """Build, evaluate and time the artifacts; print the table and optionally save JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer timing rounds")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--max-drop", type=float, default=0.005, help="top-1 budget (absolute)")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated engines")
    args = parser.parse_args()
    import duh
    from duh.compiler import AccuracyBudget

    data = np.load(TEST)
    x, y = data["input"], data["label"]
    budget = AccuracyBudget(TEST, "top1", args.max_drop, labels="label")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="duh-bench-ab-") as tmp:
        work = Path(tmp)
        for engine in args.engines.split(","):
            for kind, target, accuracy in (
                ("fp32", f"{engine}:cpu-fp32", None),
                ("int8 plain", f"{engine}:cpu-int8", None),
                ("int8 budget", f"{engine}:cpu-int8", budget),
            ):
                out = work / f"{engine}-{kind.replace(' ', '-')}.duh"
                print(f"building {target} ({kind}) ...", flush=True)
                started = time.perf_counter()
                result = duh.build(
                    MODEL, target, out, calib=CALIB if "int8" in kind else None,
                    accuracy=accuracy, cache=False, verify=accuracy is not None,
                )  # fmt: skip
                assert result.manifest is not None
                section = result.manifest.build.get("accuracy") or {}
                rows.append(
                    {
                        "engine": engine,
                        "kind": kind,
                        "path": out,
                        "build_seconds": round(time.perf_counter() - started, 1),
                        "float_layers": section.get("float_layers"),
                        "quantized_layers": section.get("quantized_layers"),
                        "rounds": len(section.get("rounds", [])),
                    }
                )
        sessions = [duh.load(r["path"], threads=THREADS) for r in rows]
        for row, session in zip(rows, sessions, strict=True):
            row["top1"] = round(_top1(session, x, y), 4)
        rounds = 30 if args.quick else 200
        print(
            f"timing batch {BATCH}, {THREADS} threads, {rounds} interleaved rounds ...", flush=True
        )
        # One interleaved run per engine: its three builds compared under the same load (an
        # engine's idle threads, ONNX Runtime's spinning ones, would tax the other engine).
        for engine in args.engines.split(","):
            group = [i for i, r in enumerate(rows) if r["engine"] == engine]
            timings = measure_interleaved(
                [sessions[i].run for i in group], [{"input": x[:BATCH]}], warmup=20, rounds=rounds,
                max_rounds=rounds, round_s=0.02, rotate=True,
            )  # fmt: skip
            for i, samples in zip(group, timings.samples_ms, strict=True):
                rows[i]["median_ms"] = round(statistics.median(samples), 4)
        for session in sessions:
            session.close()
    for row in rows:
        del row["path"]
    by = {(r["engine"], r["kind"]): r for r in rows}
    print(f"\n{'engine':12} {'build':12} {'top-1':>7} {'drop':>7} {'float layers':>13} "
          f"{'median ms':>10} {'vs fp32':>8} {'vs plain':>9}")  # fmt: skip
    for row in rows:
        fp32, plain = by[(row["engine"], "fp32")], by[(row["engine"], "int8 plain")]
        row["drop_vs_fp32"] = round(fp32["top1"] - row["top1"], 4)
        row["speedup_vs_fp32"] = round(fp32["median_ms"] / row["median_ms"], 2)
        row["speedup_vs_plain_int8"] = round(plain["median_ms"] / row["median_ms"], 2)
        floats = (
            "-"
            if row["float_layers"] is None
            else f"{len(row['float_layers'])}/{row['quantized_layers']}"
        )
        print(
            f"{row['engine']:12} {row['kind']:12} {row['top1']:7.4f} {row['drop_vs_fp32']:7.4f} "
            f"{floats:>13} {row['median_ms']:10.4f} {row['speedup_vs_fp32']:7.2f}x "
            f"{row['speedup_vs_plain_int8']:8.2f}x"
        )
    print("\n(one interleaved run on a shared machine: compare ratios, not absolute times)")
    report = {
        "model": "fixtures/outlier_cnn.onnx",
        "budget": budget.to_json(),
        "threads": THREADS,
        "batch": BATCH,
        "rows": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
