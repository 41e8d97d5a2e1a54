"""TVM untuned and tuned against ONNX Runtime FP32 on a ResNet-50, batch 1, 2 threads.

The script makes the model itself: a ResNet-50 (bottleneck blocks 3-4-6-3) in plain torch with
random weights (BatchNorm statistics set by a few forward passes in training mode, so the
activations stay in range), exported to ONNX. It builds two artifacts with ``duh.build``:
``tvm:cpu`` untuned, and ``tvm:cpu`` with ``--tune-trials N`` (MetaSchedule; a small budget),
both with the input fixed to 1x3x224x224. Then it times the source model on ONNX Runtime FP32
and both artifacts, interleaved in the same run: each round runs every subject in turn, the
fast ones several times, and the report gives medians and the ratio to ORT FP32. Idle threads of
both engines are told not to spin, so one subject's pool does not steal the CPU from the next.

The machine is shared: the numbers are noisy, compare within one run only.

    python -m benchmarks.tvm [--quick] [--trials N] [--rounds R] [--json out.json] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._models import make_resnet50
from duh.runtime import measure_interleaved

THREADS = 2
SHAPE = (1, 3, 224, 224)
# Idle TVM workers sleep at once instead of spinning (read when TVM's thread pool starts).
os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", "0")


def build(model: Path, out: Path, trials: int) -> dict[str, Any]:
    """Build ``tvm:cpu`` (tuned when ``trials``); return how long it took and what it did."""
    from duh.compiler import build as build_model

    options = {"tune_trials": str(trials)} if trials else {}
    started = time.perf_counter()
    result = build_model(
        model, "tvm:cpu", out, shapes={"input": SHAPE}, check_samples=2, target_options=options
    )
    assert result.manifest is not None
    checks = result.manifest.checks
    return {
        "artifact": str(out),
        "build_s": round(time.perf_counter() - started, 1),
        "verified": checks.get("passed"),
        "cosine": checks["outputs"][0]["cosine"] if checks.get("outputs") else None,
        "tuning": result.manifest.engine_config.get("tuning"),
    }


def main() -> int:
    """Build, measure, print medians and ratios; optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer trials and rounds")
    parser.add_argument("--trials", type=int, help="tuning trials (default 512, quick 64)")
    parser.add_argument("--rounds", type=int, help="timing rounds (default 15, quick 5)")
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--workdir", type=Path, help="keep the model and artifacts here")
    args = parser.parse_args()
    trials = args.trials or (64 if args.quick else 512)
    rounds = args.rounds or (5 if args.quick else 15)
    progress = logging.getLogger("duh.targets.tvm._tune")
    progress.addHandler(logging.StreamHandler(sys.stdout))
    progress.setLevel(logging.INFO)

    import duh

    with tempfile.TemporaryDirectory(prefix="duh-bench-tvm-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        model = work / "resnet50.onnx"
        if not model.exists():
            print("exporting ResNet-50 ...", flush=True)
            make_resnet50(model, dynamic_batch=False)
        print("building tvm:cpu untuned ...", flush=True)
        untuned = build(model, work / "resnet50.tvm.duh", 0)
        print(f"building tvm:cpu tuned ({trials} trials) ...", flush=True)
        tuned = build(model, work / f"resnet50.tvm-{trials}.duh", trials)
        ort_options = {"session.intra_op.allow_spinning": "0"}
        subjects = {
            "onnxruntime fp32 (source)": duh.load(
                model, threads=THREADS, engine_options=ort_options
            ),
            "tvm untuned": duh.load(untuned["artifact"], threads=THREADS),
            f"tvm tuned ({trials} trials)": duh.load(tuned["artifact"], threads=THREADS),
        }
        feed = {"input": np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)}
        print(f"timing {len(subjects)} subjects, {rounds} interleaved rounds ...", flush=True)
        # Fast subjects run several times a round (about 0.5 s each); the order rotates.
        timings = measure_interleaved(
            [s.run for s in subjects.values()], [feed], warmup=2, rounds=rounds,
            max_rounds=rounds, round_s=0.5, max_repeats=20, rotate=True,
        )  # fmt: skip
        samples = dict(zip(subjects, timings.samples_ms, strict=True))
    base = statistics.median(samples["onnxruntime fp32 (source)"])
    rows = []
    builds = {"tvm untuned": untuned, f"tvm tuned ({trials} trials)": tuned}
    for name, values in samples.items():
        median = statistics.median(values)
        rows.append({
            "subject": name,
            "median_ms": round(median, 3),
            "p90_ms": round(float(np.percentile(values, 90)), 3),
            "samples": len(values),
            "speed_vs_ort_fp32": round(base / median, 4),
            "build": builds.get(name),
        })
    print(f"\nResNet-50, batch 1, {THREADS} threads (shared machine: noisy, same-run ratios only)")
    print(f"{'subject':34} {'median ms':>10} {'p90 ms':>10} {'n':>4} {'vs ORT fp32':>12} "
          f"{'build s':>8}")
    for row in rows:
        build_s = row["build"]["build_s"] if row["build"] else "-"
        print(f"{row['subject']:34} {row['median_ms']:>10.2f} {row['p90_ms']:>10.2f} "
              f"{row['samples']:>4} {row['speed_vs_ort_fp32']:>11.3f}x {build_s:>8}")
    if tuned["tuning"]:
        t = tuned["tuning"]
        print(f"tuning: {t['trials']} trials over {t['tasks']} tasks in {t['seconds']}s "
              f"({t['cost_model']} cost model)")
    report = {"model": "resnet50 (random weights)", "batch": 1, "threads": THREADS,
              "trials": trials, "rounds": rounds, "results": rows}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
