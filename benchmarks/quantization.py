"""Speed, size and build time of cpu-int8 / cpu-bf16 / cpu-fp16 artifacts of a ResNet-50.

The script makes the model itself: a ResNet-50 (bottleneck blocks 3-4-6-3) in plain torch with
random weights (BatchNorm statistics set by a few forward passes in training mode, so the
activations stay in range), exported to ONNX with a dynamic batch. It then runs ``duh.build``
for each target (each short name measures its engines and keeps the faster), and times every
artifact against the source model on ONNX Runtime FP32 at batch 1 with 2 threads, interleaved
in the same run (ONNX Runtime sessions with ``session.intra_op.allow_spinning=0``, so that their
idle threads do not steal the CPU from the next session). Random weights say nothing about
accuracy: calibration uses seeded random inputs (``--calib synthetic``); benchmarks/accuracy.py
measures accuracy on real models.

    python -m benchmarks.quantization [--quick] [--json out.json] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._models import make_resnet50
from duh.runtime import measure_interleaved

THREADS = 2
TARGETS = ("cpu-int8", "cpu-bf16", "cpu-fp16")


def dir_bytes(path: Path) -> int:
    """Bytes of a file, or of every file below a directory."""
    return (
        path.stat().st_size
        if path.is_file()
        else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    )


def main() -> int:
    """Build the artifacts, time them against the source, print and optionally save the numbers."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer timing rounds and calibration samples"
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--workdir", type=Path, help="keep the model and artifacts here (default: temp)"
    )
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated targets")
    args = parser.parse_args()
    import duh

    rounds = 15 if args.quick else 60
    calib_samples = 16 if args.quick else 64
    with tempfile.TemporaryDirectory(prefix="duh-bench-q-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        source = work / "resnet50.onnx"
        if not source.is_file():
            print("making the ResNet-50 (random weights) ...", flush=True)
            make_resnet50(source)
        builds: dict[str, Any] = {}
        for target in args.targets.split(","):
            out = work / f"resnet50.{target}.duh"
            print(f"building {target} ...", flush=True)
            result = duh.build(
                source,
                target,
                out,
                calib="synthetic" if target.endswith("int8") else None,
                calib_samples=calib_samples,
            )
            assert result.manifest is not None and result.chosen is not None
            builds[target] = {
                "path": out,
                "resolved": result.chosen.name,
                "build_seconds": round(result.seconds, 1),
                "candidates": {c.spec.name: c.median_ms for c in result.candidates},
                "checks": result.manifest.checks,
                "bytes": dir_bytes(out),
            }
        # duh.load turns ORT's thread spinning off, so its idle threads do not take the CPU
        # from whichever session runs next in the interleaved loop.
        sessions = {"source (onnxruntime fp32)": duh.load(source, threads=THREADS)}
        for target, info in builds.items():
            sessions[f"{target} ({info['resolved']})"] = duh.load(info["path"], threads=THREADS)
        feed = {
            "input": np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
        }
        print(f"timing batch 1, {THREADS} threads, {rounds} interleaved rounds ...", flush=True)
        timings = measure_interleaved(
            [s.run for s in sessions.values()], [feed], warmup=5, rounds=rounds, max_rounds=rounds
        )
        times = dict(zip(sessions, timings.samples_ms, strict=True))
        base = statistics.median(times["source (onnxruntime fp32)"])
        source_bytes = dir_bytes(source)
        rows = []
        for (name, samples), target in zip(times.items(), [None, *builds], strict=True):
            median = statistics.median(samples)
            info = builds.get(target or "", {})
            size = info.get("bytes", source_bytes)
            rows.append(
                {
                    "name": name,
                    "median_ms": round(median, 2),
                    "speedup_vs_ort_fp32": round(base / median, 2),
                    "bytes": size,
                    "size_vs_fp32": round(size / source_bytes, 3),
                    "build_seconds": info.get("build_seconds"),
                    "build_candidates_ms": {
                        k: None if v is None else round(v, 2)
                        for k, v in info.get("candidates", {}).items()
                    },
                }
            )
        print(
            f"\n{'subject':42} {'median ms':>10} {'speed-up':>9} {'MB':>8} {'size':>7} "
            f"{'build s':>8}"
        )
        for row in rows:
            build_s = "-" if row["build_seconds"] is None else f"{row['build_seconds']:.1f}"
            print(
                f"{row['name']:42} {row['median_ms']:10.2f} {row['speedup_vs_ort_fp32']:8.2f}x "
                f"{row['bytes'] / 1e6:8.1f} {row['size_vs_fp32']:6.1%} {build_s:>8}"
            )
        for row in rows[1:]:
            if row["build_candidates_ms"]:
                shown = ", ".join(f"{k} {v} ms" for k, v in row["build_candidates_ms"].items())
                print(f"  {row['name']}: measured at build: {shown}")
        print("\n(the machine is shared: timings are noisy; ratios come from one interleaved run)")
        report = {
            "model": "ResNet-50 (random weights)",
            "threads": THREADS,
            "batch": 1,
            "rounds": rounds,
            "calibration": f"synthetic, {calib_samples} samples",
            "rows": rows,
        }
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        for session in sessions.values():
            session.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
