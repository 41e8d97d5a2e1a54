"""CUDA host detection: devices, compute capability, driver, CUDA runtime and TensorRT versions."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys

import pytest

from duh._cuda import (
    TENSORRT_DISTRIBUTIONS,
    cuda_info,
    decode_cuda_version,
    parse_driver_version,
    tensorrt_version,
)
from duh.host import host_info

INFO = cuda_info()
needs_gpu = pytest.mark.skipif(not INFO.devices, reason=f"needs an NVIDIA GPU ({INFO.reason})")
needs_no_gpu = pytest.mark.skipif(bool(INFO.devices), reason="this host has a CUDA device")


@needs_no_gpu
def test_a_host_without_a_gpu_says_so_cleanly() -> None:
    assert INFO.devices == ()
    assert not INFO.available
    assert INFO.reason is not None and INFO.reason.startswith("no CUDA device: ")
    assert INFO.device(0) is None
    assert INFO.to_json()["devices"] == []
    assert host_info().cuda == ()


@needs_gpu
@pytest.mark.gpu
def test_a_gpu_is_described_fully() -> None:
    gpu = INFO.devices[0]
    assert re.fullmatch(r"\d+\.\d+", gpu.compute_capability)
    assert gpu.name and gpu.memory_mib > 0
    assert INFO.reason is None
    assert INFO.cuda_driver_api is None or re.fullmatch(r"\d+\.\d+", INFO.cuda_driver_api)
    assert host_info().cuda == INFO.devices


@pytest.mark.parametrize(
    ("value", "text"), [(12040, "12.4"), (11080, "11.8"), (13000, "13.0"), (12090, "12.9")]
)
def test_cuda_versions_read_as_people_write_them(value: int, text: str) -> None:
    assert decode_cuda_version(value) == text


def test_the_driver_version_comes_from_the_kernel_module_banner() -> None:
    banner = (
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024\n"
        "GCC version:  gcc version 12.3.0 (Ubuntu 12.3.0-1ubuntu1~22.04)\n"
    )
    assert parse_driver_version(banner) == "550.54.15"
    assert parse_driver_version("GCC version: 12.3.0\n") is None


def test_tensorrt_version_is_the_installed_package() -> None:
    expected = None
    for dist in TENSORRT_DISTRIBUTIONS:
        try:
            expected = importlib.metadata.version(dist)
            break
        except importlib.metadata.PackageNotFoundError:
            continue
    assert tensorrt_version() == expected == INFO.tensorrt


@needs_no_gpu
def test_duh_targets_lists_cuda_targets_with_the_reason() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "duh", "targets", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    rows = {r["name"]: r for r in json.loads(out)["targets"]}
    for name in ("cuda", "cuda-fp16", "cuda-int8", "tensorrt:cuda-int8", "onnxruntime:cuda-fp16"):
        assert rows[name]["available"] is False
        assert "no CUDA device" in rows[name]["reason"], rows[name]
