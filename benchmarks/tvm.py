"""TVM's CPU routes against ONNX Runtime FP32 on a ResNet-50, batch 1, 2 threads, one run.

The script makes the model itself: a ResNet-50 (bottleneck blocks 3-4-6-3) in plain torch with
random weights (BatchNorm statistics set by a few forward passes in training mode, so the
activations stay in range), exported to ONNX. It builds ``tvm:cpu`` with ``duh.build`` (input fixed
to 1x3x224x224) along the routes this TVM offers (its wheel has no oneDNN/BLAS offload and Relax
keeps no x86 operator schedules, so MetaSchedule is the only route to fast CPU kernels):

- ``tuned N, ONNX weight layout``: MetaSchedule, N trials, weights left as ONNX lays them out
  (``--option weight_prepack=false``, duh's default before prepacking);
- ``tuned N, prepacked``: the same trials with the weights prepacked in the layouts the tuned
  kernels read (TVM's ``cpu_weight_prepack``; duh's default);
- ``tuned M, prepacked, from N's records``: M > N trials, the first N from the cached records
  (the search resumes from them: only M - N are measured);
- ``untuned`` with ``--untuned`` (plain loops; seconds per run).

Then it times the source model on ONNX Runtime FP32 and every artifact, interleaved in the same
run: each round runs every subject in turn, the fast ones several times, and the report gives
medians and the ratio to ORT FP32. Idle threads of both engines are told not to spin, so one
subject's pool does not steal the CPU from the next.

The machine is shared: the numbers are noisy, compare within one run only. Tuning measures
kernels too: on a shared machine, build first (``--build-only``) and time under a lock with
``--reuse``.

    python -m benchmarks.tvm [--quick] [--trials N] [--more M] [--untuned] [--rounds R]
                             [--build-only] [--reuse] [--json out.json] [--workdir DIR]
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
BASELINE = "onnxruntime fp32 (source)"
# Idle TVM workers sleep at once instead of spinning (read when TVM's thread pool starts).
os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", "0")


def build(model: Path, out: Path, trials: int, prepack: bool, reuse: bool) -> dict[str, Any]:
    """Build ``tvm:cpu`` (tuned when ``trials``); return how long it took and what it did."""
    import duh
    from duh.compiler import build as build_model

    if reuse and out.is_dir():
        with duh.load(out) as session:
            manifest = session.manifest
        started = None
    else:
        options = {"tune_trials": str(trials)} if trials else {}
        options["weight_prepack"] = "true" if prepack else "false"
        started = time.perf_counter()
        result = build_model(
            model, "tvm:cpu", out, shapes={"input": SHAPE}, check_samples=2,
            target_options=options,
        )  # fmt: skip
        assert result.manifest is not None
        manifest = result.manifest
    checks = manifest.checks
    return {
        "artifact": str(out),
        "build_s": None if started is None else round(time.perf_counter() - started, 1),
        "verified": checks.get("passed"),
        "cosine": checks["outputs"][0]["cosine"] if checks.get("outputs") else None,
        "tuning": manifest.engine_config.get("tuning"),
    }


def _routes(trials: int, more: int, untuned: bool) -> list[tuple[str, str, int, bool]]:
    """(subject, artifact name, trials, prepack), in build order (N's records before M's)."""
    routes = [
        (f"tvm tuned {trials}, ONNX weight layout", f"tvm-{trials}-plain", trials, False),
        (f"tvm tuned {trials}, prepacked", f"tvm-{trials}-prepack", trials, True),
    ]
    if more > trials:
        routes.append(
            (f"tvm tuned {more}, prepacked, from {trials}'s records", f"tvm-{more}-prepack",
             more, True)
        )  # fmt: skip
    if untuned:
        routes.insert(0, ("tvm untuned", "tvm-untuned", 0, False))
    return routes


def main() -> int:
    """Build, measure, print medians and ratios; optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer trials and rounds")
    parser.add_argument("--trials", type=int, help="tuning trials (default 512, quick 64)")
    parser.add_argument("--more", type=int, help="trials of the resumed route (default 2x)")
    parser.add_argument("--untuned", action="store_true", help="also time untuned TVM (slow)")
    parser.add_argument("--rounds", type=int, help="timing rounds (default 15, quick 5)")
    parser.add_argument("--build-only", action="store_true", help="build, do not time")
    parser.add_argument("--reuse", action="store_true", help="time the artifacts in --workdir")
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--workdir", type=Path, help="keep the model and artifacts here")
    args = parser.parse_args()
    trials = args.trials or (64 if args.quick else 512)
    more = args.more if args.more is not None else 2 * trials
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
        builds: dict[str, dict[str, Any]] = {}
        for subject, name, n, prepack in _routes(trials, more, args.untuned):
            print(f"building {subject} ...", flush=True)
            builds[subject] = build(model, work / f"resnet50.{name}.duh", n, prepack, args.reuse)
            print(f"  {json.dumps(builds[subject])}", flush=True)
        if args.build_only:
            return 0
        ort_options = {"session.intra_op.allow_spinning": "0"}
        subjects = {BASELINE: duh.load(model, threads=THREADS, engine_options=ort_options)}
        for subject, info in builds.items():
            subjects[subject] = duh.load(info["artifact"], threads=THREADS)
        feed = {"input": np.random.default_rng(0).standard_normal(SHAPE).astype(np.float32)}
        print(f"timing {len(subjects)} subjects, {rounds} interleaved rounds ...", flush=True)
        # Fast subjects run several times a round (about 0.5 s each); the order rotates.
        timings = measure_interleaved(
            [s.run for s in subjects.values()], [feed], warmup=2, rounds=rounds,
            max_rounds=rounds, round_s=0.5, max_repeats=20, rotate=True,
        )  # fmt: skip
        samples = dict(zip(subjects, timings.samples_ms, strict=True))
    base = statistics.median(samples[BASELINE])
    rows = []
    for name, values in samples.items():
        median = statistics.median(values)
        rows.append({
            "subject": name,
            "median_ms": round(median, 3),
            "p90_ms": round(float(np.percentile(values, 90)), 3),
            "samples": len(values),
            "speed_vs_ort_fp32": round(base / median, 4),
            "build": builds.get(name),
        })  # fmt: skip
    print(f"\nResNet-50, batch 1, {THREADS} threads (shared machine: noisy, same-run ratios only)")
    print(f"{'subject':44} {'median ms':>10} {'p90 ms':>10} {'n':>4} {'vs ORT fp32':>12} "
          f"{'tuning s':>9}")  # fmt: skip
    for row in rows:
        tuning = (row["build"] or {}).get("tuning") or {}
        tuning_s = tuning.get("seconds", "-")
        print(
            f"{row['subject']:44} {row['median_ms']:>10.2f} {row['p90_ms']:>10.2f} "
            f"{row['samples']:>4} {row['speed_vs_ort_fp32']:>11.3f}x {tuning_s:>9}"
        )
    report = {
        "model": "resnet50 (random weights)",
        "batch": 1,
        "threads": THREADS,
        "trials": trials,
        "more": more,
        "rounds": rounds,
        "results": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
