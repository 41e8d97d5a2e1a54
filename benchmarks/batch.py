"""``duh batch`` throughput against a plain Python loop over ``Session.run``.

``python -m benchmarks.batch [--quick] [--json FILE] [--samples N] [--model light|heavy]``

On one data set (N rows of the serve benchmark's MLP, x[N,256], plain ONNX on ONNX Runtime), in
each round, interleaved:

1. a plain loop: one ``duh.load`` session with every core, ``session.run`` over the rows at
   batch 1, and at each candidate batch size (the best one is reported);
2. ``duh batch`` as a user runs it (one engine in this process, every core, the default shard
   size) at batch 1 and at that best batch size, into a fresh output folder each time: planning,
   the engine's load, reading the rows and writing and fsyncing the shard files all count;
3. ``duh batch --workers 2`` (a pool of 2 processes, one thread each) at the best batch size;
4. ``duh batch --ray`` with 2 workers at the best batch size, when ray is installed
   (``duh[ray]``); Ray's own start is outside the timing, its actors' start-up inside.

The loop's figure is ``session.run`` alone (no load, no reading, no writing), the strictest
baseline. The report gives medians over rounds (samples/s) and the ratios duh batch / loop at the
same batch size. Expect parity for the default (the engine already spreads a batch over the
cores; file work overlaps the engine), and the pool and Ray below it on 2 cores: their processes
add start-up (seconds) and no compute.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import duh
from duh.batch import BatchRequest, run_batch
from fixtures.serve_models import write_model

CANDIDATES = (8, 32, 128)


def _cores() -> int:
    return len(os.sched_getaffinity(0))


def _loop(model: Path, x: np.ndarray, batch: int) -> float:
    """Samples/s of a plain loop over session.run at ``batch`` rows per call."""
    with duh.load(model, threads=_cores()) as session:
        session.run({"x": x[:batch]})  # warm-up
        began = time.perf_counter()
        for lo in range(0, len(x), batch):
            session.run({"x": x[lo : lo + batch]})
        return len(x) / (time.perf_counter() - began)


def _duh_batch(
    model: Path, data: Path, batch: int, workers: int | None = None, ray: bool = False
) -> float:
    out = Path(tempfile.mkdtemp(prefix="duh-batch-bench-"))
    shutil.rmtree(out)
    try:
        request = BatchRequest(model, data, out, batch_size=batch, workers=workers)
        began = time.perf_counter()
        if ray:
            from duh.integrations.ray import run_batch_on_ray

            run_batch_on_ray(request)
        else:
            run_batch(request)
        return request_samples(data) / (time.perf_counter() - began)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def request_samples(data: Path) -> int:
    """Rows in the benchmark's .npy file."""
    return int(np.load(data, mmap_mode="r").shape[0])


def main() -> int:
    """Run the comparison; print a table and optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples and rounds")
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--samples", type=int, help="rows in the data set")
    parser.add_argument("--rounds", type=int, help="interleaved rounds")
    parser.add_argument("--model", default="light", choices=("light", "heavy"))
    args = parser.parse_args()
    samples = args.samples or (20_000 if args.quick else 40_000)
    rounds = args.rounds or (2 if args.quick else 5)
    try:
        import ray
    except ImportError:
        ray = None
    with tempfile.TemporaryDirectory(prefix="duh-batch-bench-") as tmp:
        root = Path(tmp)
        model = write_model(args.model, root / f"{args.model}.onnx")
        x = np.random.default_rng(0).standard_normal((samples, 256)).astype(np.float32)
        data = root / "x.npy"
        np.save(data, x)
        figures: dict[str, list[float]] = {}
        if ray is not None:
            ray.init(num_cpus=_cores(), include_dashboard=False, _node_ip_address="127.0.0.1",
                     log_to_driver=False, configure_logging=False)
        for r in range(rounds):
            for b in (1, *CANDIDATES):
                figures.setdefault(f"loop@{b}", []).append(_loop(model, x, b))
            best = max(CANDIDATES, key=lambda b: statistics.median(figures[f"loop@{b}"]))
            figures.setdefault("batch@1", []).append(_duh_batch(model, data, 1))
            figures.setdefault("batch@best", []).append(_duh_batch(model, data, best))
            figures.setdefault("pool2@best", []).append(_duh_batch(model, data, best, 2))
            if ray is not None:
                figures.setdefault("ray2@best", []).append(
                    _duh_batch(model, data, best, 2, ray=True))
            print(f"round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
        if ray is not None:
            ray.shutdown()
    medians = {k: statistics.median(v) for k, v in figures.items()}
    best = max(CANDIDATES, key=lambda b: medians[f"loop@{b}"])
    report: dict[str, Any] = {
        "model": args.model, "samples": samples, "rounds": rounds, "cores": _cores(),
        "best_batch": best, "samples_per_s": {k: round(v, 1) for k, v in medians.items()},
        "ratios": {
            "batch@1 / loop@1": round(medians["batch@1"] / medians["loop@1"], 3),
            "batch@best / loop@best": round(medians["batch@best"] / medians[f"loop@{best}"], 3),
            "pool2@best / loop@best": round(medians["pool2@best"] / medians[f"loop@{best}"], 3),
        },
    }
    if "ray2@best" in medians:
        report["ratios"]["ray2@best / loop@best"] = round(
            medians["ray2@best"] / medians[f"loop@{best}"], 3)
    print(f"{samples} samples of the {args.model} MLP, {_cores()} cores, medians of {rounds}:")
    for key, value in medians.items():
        print(f"  {key:>12}: {value:>10,.0f} samples/s")
    for key, value in report["ratios"].items():
        print(f"  {key}: {value}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
