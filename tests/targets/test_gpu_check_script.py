"""scripts/_gpu_check.py's CPU-side logic: engine discovery, skips, and the summary's shape."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def check():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("_gpu_check", ROOT / "scripts" / "_gpu_check.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["_gpu_check"] = module
    spec.loader.exec_module(module)
    return module


def _engines(**over: object) -> dict[str, object]:
    base = {"gpus": ["H200"], "cuda_reason": None, "tensorrt": "10.13.0", "cuda_python": "12.9",
            "ort_providers": ["TensorrtExecutionProvider", "CUDAExecutionProvider"]}
    return {**base, **over}


def test_skip_reasons_per_engine(check) -> None:  # type: ignore[no-untyped-def]
    assert all(check.skip_reason(t, _engines()) is None for t in check.TARGETS)
    no_trt = _engines(tensorrt=None)
    assert "TensorRT" in check.skip_reason("tensorrt:cuda-fp16", no_trt)
    assert check.skip_reason("onnxruntime:cuda-fp16", no_trt) is None
    cpu_ort = _engines(ort_providers=["CPUExecutionProvider"])
    assert "CUDAExecutionProvider" in check.skip_reason("onnxruntime:cuda-fp32", cpu_ort)
    assert "cuda-python" in check.skip_reason("tensorrt:cuda-int8", _engines(cuda_python=None))
    no_gpu = _engines(gpus=[], cuda_reason="no CUDA device: none found")
    assert {check.skip_reason(t, no_gpu) for t in check.TARGETS} == {"no CUDA device: none found"}


def test_this_host_gets_a_summary_of_skips(check, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    engines = check.discover()
    if engines["gpus"]:
        pytest.skip("this host has a GPU: the full check is scripts/gpu_check.sh")
    out = tmp_path / "summary.json"
    assert check.main(["--out", str(out), "--budget-s", "60"]) == 0
    summary = json.loads(out.read_text())
    assert summary["schema"] == check.SCHEMA
    assert list(summary["targets"]) == list(check.TARGETS)
    assert all(r["status"] == "skipped" and r["reason"] for r in summary["targets"].values())
    assert summary["gpu_tests"]["status"] == "skipped"
    assert summary["engines"]["ort_providers"] == ort.get_available_providers()
    assert set(summary) >= {"host", "engines", "batch", "elapsed_s"}


def test_the_resnet50_model_runs_on_cpu_onnxruntime(check, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = check.resnet50(tmp_path / "r50.onnx", batch=1)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(1, 3, 224, 224)).astype(np.float32)
    (y,) = session.run(None, {"input": x})
    assert y.shape == (1, 1000) and np.isfinite(y).all() and y.std() > 0
    convs = sum(n.op_type == "Conv" for n in __import__("onnx").load(str(path)).graph.node)
    assert convs == 53  # the stem, 16 bottlenecks of 3, 4 projection shortcuts
    acc = check._accuracy(y, y)
    assert acc["cosine"] == pytest.approx(1.0) and acc["top1_agree"] == 1.0
