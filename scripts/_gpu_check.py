"""The Python part of scripts/gpu_check.sh: build, check and time duh's NVIDIA targets.

Finds which engines this host has (a CUDA device, TensorRT, cuda-python, onnxruntime-gpu's
providers), builds a ResNet-50-class model (random weights, generated here) for every target it
can run, checks each artifact's outputs against CPU ONNX Runtime, times it through ``duh.load``
and with device-resident buffers (CUDA events for TensorRT; ORT's I/O binding), runs the GPU-marked
tests, and writes one JSON summary. Targets it cannot run are listed with the reason, never
failed. Times here are measurements for a report, not checks.

    python scripts/_gpu_check.py --out gpu_check.json [--budget-s 480] [--batch 32]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = 1
TARGETS = (
    "tensorrt:cuda-fp32",
    "tensorrt:cuda-fp16",
    "tensorrt:cuda-int8",
    "onnxruntime:cuda-fp32",
    "onnxruntime:cuda-fp16",
)


def _version(*dists: str) -> str | None:
    for dist in dists:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def discover() -> dict[str, Any]:
    """What this host has: GPUs (libcuda), TensorRT, cuda-python, onnxruntime and its providers."""
    from duh._cuda import cuda_info

    info = cuda_info()
    try:
        import onnxruntime as ort

        providers = list(ort.get_available_providers())
        ort_version: str | None = ort.__version__
    except ImportError:
        providers, ort_version = [], None
    try:
        bindings = importlib.util.find_spec("cuda.bindings") is not None
    except ImportError:
        bindings = False
    return {
        "gpus": [d.name for d in info.devices],
        "cuda_reason": info.reason,
        "driver": info.driver_version,
        "cuda_driver_api": info.cuda_driver_api,
        "tensorrt": _version("tensorrt", "tensorrt-cu13", "tensorrt-cu12")
        if importlib.util.find_spec("tensorrt") is not None else None,
        "cuda_python": _version("cuda-bindings", "cuda-python") if bindings else None,
        "onnxruntime": ort_version,
        "onnxruntime_gpu": _version("onnxruntime-gpu"),
        "ort_providers": providers,
    }


def skip_reason(target: str, engines: Mapping[str, Any]) -> str | None:
    """Why ``target`` cannot run with ``engines`` (what ``discover`` found); None: it can."""
    if not engines["gpus"]:
        return engines.get("cuda_reason") or "no CUDA device"
    if target.startswith("tensorrt:"):
        if not engines["tensorrt"]:
            return "TensorRT is not installed (pip install 'duh[gpu-cu12]' or 'duh[gpu-cu13]')"
        if not engines["cuda_python"]:
            return "cuda-python (cuda.bindings) is not installed"
        return None
    if "CUDAExecutionProvider" not in engines["ort_providers"]:
        return "this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"
    return None


def resnet50(path: Path, batch: int = 1) -> Path:
    """A ResNet-50-shaped ONNX model (bottleneck blocks 3-4-6-3, BN folded), random weights."""
    from onnx import TensorProto, helper, numpy_helper, save_model

    rng = np.random.default_rng(0)
    nodes: list[Any] = []
    inits: list[Any] = []

    def conv(x: str, cin: int, cout: int, k: int, stride: int, relu: bool) -> str:
        i = len(nodes)
        w = (rng.normal(size=(cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        inits.append(numpy_helper.from_array(np.zeros(cout, np.float32), f"b{i}"))
        nodes.append(helper.make_node(
            "Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=[k, k],
            strides=[stride, stride], pads=[k // 2] * 4))
        if not relu:
            return f"c{i}"
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        return f"r{i}"

    x = conv("input", 3, 64, 7, 2, True)
    nodes.append(helper.make_node("MaxPool", [x], ["pool"], kernel_shape=[3, 3],
                                  strides=[2, 2], pads=[1, 1, 1, 1]))
    x, cin = "pool", 64
    for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512), strict=True)):
        for block in range(blocks):
            stride = 2 if block == 0 and stage > 0 else 1
            y = conv(x, cin, width, 1, 1, True)
            y = conv(y, width, width, 3, stride, True)
            y = conv(y, width, width * 4, 1, 1, False)
            short = conv(x, cin, width * 4, 1, stride, False) if block == 0 else x
            out = f"add{len(nodes)}"
            nodes.append(helper.make_node("Add", [y, short], [out]))
            nodes.append(helper.make_node("Relu", [out], [out + "r"]))
            x, cin = out + "r", width * 4
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"]))
    fc = (rng.normal(size=(2048, 1000)) * 0.02).astype(np.float32)
    inits += [numpy_helper.from_array(fc, "fc_w"),
              numpy_helper.from_array(np.zeros(1000, np.float32), "fc_b")]
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"]))
    graph = helper.make_graph(
        nodes, "resnet50",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 1000])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    save_model(model, str(path))
    return path


def _median_ms(fn: Callable[[], Any], runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return round(statistics.median(times), 3)


def _accuracy(want: np.ndarray, got: np.ndarray) -> dict[str, float]:
    a, b = want.ravel().astype(np.float64), got.ravel().astype(np.float64)
    cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))
    top1 = float(np.mean(want.argmax(-1) == got.argmax(-1)))
    return {"cosine": round(cos, 6), "max_abs": float(np.abs(a - b).max()), "top1_agree": top1}


def _device_resident_ms(target: str, artifact: Path, feed: np.ndarray, runs: int) -> float | None:
    """Median ms per run with inputs and outputs left on the GPU."""
    if target.startswith("tensorrt:"):
        return _trt_events_ms(artifact, feed, runs)
    import onnxruntime as ort

    import duh

    # The artifact's own ORT session (its providers and options), fed from GPU memory.
    session = duh.load(artifact).engine.session  # type: ignore[attr-defined]
    binding = session.io_binding()
    name = session.get_inputs()[0].name
    x = ort.OrtValue.ortvalue_from_numpy(feed, "cuda", 0)
    binding.bind_ortvalue_input(name, x)
    for out in session.get_outputs():
        binding.bind_output(out.name, "cuda")
    return _median_ms(lambda: session.run_with_iobinding(binding), runs)


def _trt_events_ms(artifact: Path, feed: np.ndarray, runs: int) -> float:
    import tensorrt as trt
    from cuda.bindings import runtime as rt

    def ok(result: Any) -> Any:
        err, *rest = result
        if err != rt.cudaError_t.cudaSuccess:
            raise RuntimeError(f"CUDA error {err}")
        return rest[0] if len(rest) == 1 else rest

    logger = trt.Logger(trt.Logger.ERROR)
    engine = trt.Runtime(logger).deserialize_cuda_engine((artifact / "model.engine").read_bytes())
    context = engine.create_execution_context()
    stream = ok(rt.cudaStreamCreate())
    ptrs = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            context.set_input_shape(name, feed.shape)
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        shape = tuple(context.get_tensor_shape(name))
        size = int(np.prod(shape)) * np.dtype(trt.nptype(engine.get_tensor_dtype(name))).itemsize
        ptr = ok(rt.cudaMalloc(size))
        ptrs.append(ptr)
        context.set_tensor_address(name, int(ptr))
    start, end = ok(rt.cudaEventCreate()), ok(rt.cudaEventCreate())
    times = []
    for i in range(runs + 3):
        ok(rt.cudaEventRecord(start, stream))
        context.execute_async_v3(int(stream))
        ok(rt.cudaEventRecord(end, stream))
        ok(rt.cudaEventSynchronize(end))
        if i >= 3:
            times.append(float(ok(rt.cudaEventElapsedTime(start, end))))
    for ptr in ptrs:
        rt.cudaFree(ptr)
    rt.cudaStreamDestroy(stream)
    return round(statistics.median(times), 3)


def check_target(
    target: str, model: Path, work: Path, feed: np.ndarray, want: np.ndarray, runs: int
) -> dict[str, Any]:
    """Build ``target``, compare it with CPU ONNX Runtime and time it; a result dict."""
    import duh

    result: dict[str, Any] = {"status": "failed"}
    started = time.perf_counter()
    try:
        built = duh.build(
            model, target, work / (target.replace(":", "_") + ".duh"),
            calib="synthetic" if target.endswith("int8") else None, calib_samples=32,
            check_samples=2, cache=False,
        )
        result["build_s"] = round(time.perf_counter() - started, 1)
        assert built.output is not None
        with duh.load(built.output) as session:
            got = session.run({"input": feed})["logits"]
            result["accuracy"] = _accuracy(want, got)
            result["duh_load_ms"] = _median_ms(lambda: session.run({"input": feed}), runs)
        result["device_resident_ms"] = _device_resident_ms(target, built.output, feed, runs)
        result["status"] = "ok"
    except Exception as exc:  # noqa: BLE001 - reported, and the other targets still run
        result["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return result


def gpu_tests(timeout_s: float) -> dict[str, Any]:
    """The project's GPU-marked tests (pytest -m gpu), their outcome and the summary line."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
           str(ROOT / "tests")]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "timeout_s": timeout_s}
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
    return {"status": "ok" if proc.returncode in (0, 5) else "failed",
            "returncode": proc.returncode, "summary": lines[-1] if lines else ""}


def run(out: Path, budget_s: float, batch: int, runs: int, tests: bool = True) -> dict[str, Any]:
    """The whole check; writes and returns the summary."""
    started = time.perf_counter()
    engines = discover()
    summary: dict[str, Any] = {
        "schema": SCHEMA,
        "host": {"python": platform.python_version(), "machine": platform.machine()},
        "engines": engines,
        "batch": batch,
        "targets": {},
        "gpu_tests": None,
    }
    runnable = [t for t in TARGETS if skip_reason(t, engines) is None]
    for target in TARGETS:
        reason = skip_reason(target, engines)
        if reason:
            summary["targets"][target] = {"status": "skipped", "reason": reason}
    if runnable:
        import onnxruntime as ort

        with tempfile.TemporaryDirectory(prefix="duh-gpu-check-") as tmp:
            work = Path(tmp)
            model = resnet50(work / "resnet50.onnx", batch)
            feed = np.random.default_rng(1).normal(size=(batch, 3, 224, 224)).astype(np.float32)
            cpu = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
            want = cpu.run(None, {"input": feed})[0]
            for target in runnable:
                if time.perf_counter() - started > budget_s * 0.75:
                    summary["targets"][target] = {"status": "skipped", "reason": "time budget"}
                    continue
                summary["targets"][target] = check_target(target, model, work, feed, want, runs)
    summary["targets"] = {t: summary["targets"][t] for t in TARGETS}
    left = budget_s - (time.perf_counter() - started)
    if not tests:
        summary["gpu_tests"] = {"status": "skipped", "reason": "--no-tests"}
    elif not engines["gpus"]:
        summary["gpu_tests"] = {"status": "skipped", "reason": "no CUDA device"}
    elif left < 30:
        summary["gpu_tests"] = {"status": "skipped", "reason": "time budget"}
    else:
        summary["gpu_tests"] = gpu_tests(left - 10)
    summary["elapsed_s"] = round(time.perf_counter() - started, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--budget-s", type=float, default=480.0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--no-tests", action="store_true")
    args = parser.parse_args(argv)
    summary = run(args.out, args.budget_s, args.batch, args.runs, tests=not args.no_tests)
    failed = [t for t, r in summary["targets"].items() if r["status"] == "failed"]
    print(f"wrote {args.out}; failed: {', '.join(failed) or 'none'}")
    return 1 if failed or (summary["gpu_tests"] or {}).get("status") == "failed" else 0


if __name__ == "__main__":
    raise SystemExit(main())
