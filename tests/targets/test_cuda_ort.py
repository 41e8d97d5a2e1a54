"""ONNX Runtime on CUDA: the ``onnxruntime`` engine's cuda targets.

Provider choice, provider options and availability are tested here; building and running on a
GPU is marked ``gpu`` and skips with the reason on hosts without one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import duh
from duh._cuda import cuda_info
from duh.compiler import build as build_model
from duh.compiler.ingest import ingest
from duh.errors import ConfigError
from duh.host import CudaDevice, host_info
from duh.targets import TargetSpec, get_target
from duh.targets._gpu import input_profiles, parse_shape_range, trt_ep_profile_options
from duh.targets.onnxruntime._cuda import (
    CUDA_EP,
    TRT_EP,
    choose_provider,
    provider_options,
    unavailable_reason,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
PLUGIN = get_target("onnxruntime")
REASON = PLUGIN.unavailable_reason("cuda", "fp32", host_info())
needs_gpu = pytest.mark.skipif(REASON is not None, reason=f"onnxruntime cannot use CUDA: {REASON}")
GPU = CudaDevice(0, "NVIDIA A10", "8.6", "550.54.15", 24_000)


def test_onnxruntime_offers_cuda_targets() -> None:
    assert "cuda" in PLUGIN.devices and "cpu" in PLUGIN.devices
    assert {"fp32", "fp16", "int8"} <= set(PLUGIN.precisions)


@pytest.mark.skipif(bool(cuda_info().devices), reason="this host has a CUDA device")
def test_without_a_gpu_the_reason_says_so() -> None:
    reason = PLUGIN.unavailable_reason("cuda", "fp16", host_info())
    assert reason is not None and reason.startswith("no CUDA device")
    # The CPU targets are untouched.
    assert PLUGIN.unavailable_reason("cpu", "fp32", host_info()) is None


def test_the_cpu_wheel_on_a_gpu_host_is_told_to_switch() -> None:
    if CUDA_EP in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    host = dataclasses.replace(host_info(), cuda=(GPU,))
    reason = unavailable_reason("fp32", host)
    assert reason is not None
    assert "CPU build" in reason and "pip uninstall -y onnxruntime" in reason


def test_tensorrts_provider_is_preferred_when_present() -> None:
    assert choose_provider({}, [TRT_EP, CUDA_EP, "CPUExecutionProvider"]) == "tensorrt"
    assert choose_provider({}, [CUDA_EP, "CPUExecutionProvider"]) == "cuda"
    assert choose_provider({"ep": "cuda"}, [TRT_EP, CUDA_EP]) == "cuda"
    with pytest.raises(ConfigError, match="lacks TensorrtExecutionProvider"):
        choose_provider({"ep": "tensorrt"}, [CUDA_EP])
    with pytest.raises(ConfigError, match="not one of"):
        choose_provider({"ep": "rocm"}, [CUDA_EP])


def test_provider_options_carry_precision_workspace_and_profile() -> None:
    model = ingest(FIXTURES / "digits_cnn.onnx").model
    ranges = {"input": parse_shape_range("1x1x8x8:2x1x8x8:8x1x8x8", "input")}
    profiles = input_profiles(model, ranges, 32)
    opts = provider_options("tensorrt", "int8", 1, 1024, trt_ep_profile_options(profiles))
    assert opts["device_id"] == "1"
    assert opts["trt_int8_enable"] == "True" and opts["trt_fp16_enable"] == "False"
    assert opts["trt_max_workspace_size"] == str(1024 << 20)
    assert opts["trt_profile_max_shapes"] == "input:8x1x8x8"
    assert provider_options("cuda", "fp16", 0, None, {}) == {"device_id": "0"}


def test_cuda_pipelines_leave_out_cpu_fusions() -> None:
    fp16 = [p.name for p in PLUGIN.default_passes(TargetSpec("onnxruntime", "cuda", "fp16"))]
    assert fp16[-1] == "fp16" and "fuse" not in fp16
    int8 = PLUGIN.default_passes(TargetSpec("onnxruntime", "cuda", "int8"))
    assert int8[-1].name == "quantize" and int8[-1].config["symmetric_activations"] is True
    cpu = [p.name for p in PLUGIN.default_passes(TargetSpec("onnxruntime", "cpu", "fp32"))]
    assert "fuse" in cpu


@needs_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_builds_run_on_the_gpu(precision: str, tmp_path: Path) -> None:
    out = tmp_path / f"digits.{precision}.duh"
    result = build_model(FIXTURES / "digits_cnn.onnx", f"onnxruntime:cuda-{precision}", out)
    assert result.manifest is not None and result.manifest.checks["passed"]
    with duh.load(out) as session:
        data = np.load(FIXTURES / "digits_test.npz")["input"][:8]
        assert session.run({"input": data})["logits"].shape == (8, 10)
