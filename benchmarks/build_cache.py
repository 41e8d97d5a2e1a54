"""How much the build cache saves: a cold ``duh build`` against an unchanged rebuild, and against a
rebuild where only the last pass's config changed.

``python -m benchmarks.build_cache [--quick] [--json FILE] [--depth 50] [--target cpu-int8]``

The model is ``fixtures/make_resnet.py``'s seeded ResNet-50 (224x224, ~25.6 M parameters),
calibrated on photo crops. Every build is the CLI in a fresh process (what a CI step pays:
interpreter start, imports, hashing), into one fresh ``DUH_CACHE_DIR``:

- ``cold``: the first build (every stage runs and is stored);
- ``cached``: the same build again, ``--repeat`` times (the artifact is copied from the cache;
  target: at most 2 s);
- ``last_pass``: the same build with another ``--calib-method`` (only the ``quantize`` pass's
  config changes): the passes before it come from the cache, quantize and the engine run.

Reported: each figure's median wall time, the in-process build time ``duh build --json`` gives,
the ratios to ``cold``, and which passes the ``last_pass`` build reused.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fixtures.make_resnet import make_images, make_resnet  # noqa: E402

CACHED_TARGET_S = 2.0


def _build(args: Sequence[str], env: dict[str, str]) -> tuple[float, dict[str, Any]]:
    """Run ``duh build ARGS --json`` in a fresh process; its wall time and its report."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "duh", "build", *args, "--json"],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"duh build failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    return wall, json.loads(done.stdout)


def run(tmp: Path, depth: int, target: str, repeat: int, calib: int) -> dict[str, Any]:
    """Measure cold, cached and last-pass rebuilds in ``tmp``."""
    model = make_resnet(tmp / f"resnet{depth}.onnx", depth)
    calib_file = make_images(tmp / "calib.npz", calib, seed=1)
    check_file = make_images(tmp / "check.npz", 4, seed=2)
    env = {**os.environ, "DUH_CACHE_DIR": str(tmp / "cache")}
    common = [str(model), "-t", target, "--calib", str(calib_file), "--check-data", str(check_file)]
    common += ["--check-samples", "4"]
    cold_s, cold = _build([*common, "-o", str(tmp / "cold.duh")], env)
    print(f"cold build: {cold_s:.2f} s ({cold['resolved']})", flush=True)
    cached = []
    for i in range(repeat):
        wall, report = _build([*common, "-o", str(tmp / f"cached{i}.duh")], env)
        assert report["cached"], "an unchanged rebuild missed the cache"
        cached.append((wall, report["seconds"]))
        print(f"cached rebuild {i + 1}: {wall:.2f} s (in-process {report['seconds']:.2f} s)")
    last_s, last = _build(
        [*common, "--calib-method", "percentile", "-o", str(tmp / "last.duh")], env
    )
    passes = last["manifest"]["passes"]
    reused = [p["name"] for p in passes if p["cached"]]
    saved = sum(p["seconds"] for p in cold["manifest"]["passes"] if p["name"] in reused)
    print(f"last pass changed: {last_s:.2f} s, reused {', '.join(reused) or 'nothing'}")
    cached_med = statistics.median(w for w, _ in cached)
    return {
        "model": f"resnet{depth} (fixtures/make_resnet.py, 224x224)",
        "target": target,
        "resolved": cold["resolved"],
        "calibration_samples": calib,
        "cold_s": round(cold_s, 3),
        "cold_in_process_s": cold["seconds"],
        "cached_s": [round(w, 3) for w, _ in cached],
        "cached_median_s": round(cached_med, 3),
        "cached_in_process_median_s": round(statistics.median(s for _, s in cached), 3),
        "cold_over_cached": round(cold_s / cached_med, 1),
        "cached_within_target": cached_med <= CACHED_TARGET_S,
        "last_pass_s": round(last_s, 3),
        "cold_over_last_pass": round(cold_s / last_s, 2),
        "last_pass_reused": reused,
        "last_pass_recomputed": [p["name"] for p in passes if not p["cached"]],
        "reused_passes_first_run_s": round(saved, 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its figures; exit 1 when the cached rebuild misses 2 s."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and samples")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--depth", type=int, default=50, help="ResNet depth (18, 34, 50, 101)")
    parser.add_argument("--target", default="cpu-int8")
    parser.add_argument("--repeat", type=int, default=None, help="cached rebuilds (default 5)")
    args = parser.parse_args(argv)
    repeat = args.repeat or (3 if args.quick else 5)
    calib = 8 if args.quick else 32
    with tempfile.TemporaryDirectory(prefix="duh-build-cache-") as tmp:
        result = run(Path(tmp), args.depth, args.target, repeat, calib)
    print(
        f"\n{result['model']} for {result['target']} ({result['resolved']}): "
        f"cold {result['cold_s']:.1f} s, cached median {result['cached_median_s']:.2f} s "
        f"({result['cold_over_cached']}x; target <= {CACHED_TARGET_S} s: "
        f"{'met' if result['cached_within_target'] else 'MISSED'}), last pass changed "
        f"{result['last_pass_s']:.1f} s ({result['cold_over_last_pass']}x)"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["cached_within_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
