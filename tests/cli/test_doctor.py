"""``duh doctor``: engines, host flags, CUDA and the cache, as a user reads them."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from duh.cli import app
from duh.host import cpu_flags

runner = CliRunner()


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    (root / "calibration").mkdir(parents=True)
    (root / "calibration" / "ranges.json").write_bytes(b"x" * 1000)
    (root / "tvm").mkdir()
    (root / "tvm" / "records.json").write_bytes(b"y" * 24)
    monkeypatch.setenv("DUH_CACHE_DIR", str(root))
    return root


def test_doctor_json_reports_engines_flags_cuda_and_the_cache(cache: Path) -> None:
    result = runner.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["schema"] == "duh.doctor/1"
    parts = {c["name"]: c for c in doc["components"]}
    assert set(parts) >= {"onnxruntime", "openvino", "apache-tvm", "tensorrt", "onnxruntime-gpu"}
    assert parts["onnxruntime"]["installed"] and parts["onnxruntime"]["version"] == _version(
        "onnxruntime"
    )
    assert "CPUExecutionProvider" in parts["onnxruntime"]["detail"]
    assert parts["openvino"]["version"] == _version("openvino")
    assert parts["openvino"]["install"] == "pip install 'duh[openvino]'"
    missing = {m["name"]: m["install"] for m in doc["missing"]}
    assert missing == {n: c["install"] for n, c in parts.items() if not c["installed"]}
    if "tensorrt" in missing:
        assert missing["tensorrt"] == "pip install 'duh[gpu]'"
    flags = doc["host"]["cpu_flags"]
    assert set(flags) >= {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8"}
    assert all(present == (flag in cpu_flags()) for flag, present in flags.items())
    assert set(doc["cuda"]) >= {"devices", "driver_version", "cuda_runtime", "tensorrt", "reason"}
    assert doc["cache"] == {
        "path": str(cache),
        "source": "DUH_CACHE_DIR",
        "bytes": 1024,
        "files": 2,
        "kinds": {"calibration": 1000, "tvm": 24},
    }


def test_doctor_prints_a_summary_and_exits_0(cache: Path) -> None:
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "onnxruntime" in out and "CPU:" in out and "CUDA:" in out
    assert f"cache: {cache} (DUH_CACHE_DIR): 1.0 KiB in 2 files" in out
