"""How ``duh targets`` marks TVM slow: the host-class rule, the installed wheel, the CLI output."""

from __future__ import annotations

import json
import platform
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from duh.cli import app
from duh.host import HostInfo, host_info
from duh.targets.tvm import speed_note
from duh.targets.tvm._speed import MEASURED, SLOW_BELOW, library_offload

pytest.importorskip("tvm")

MEASURED_CLASS = MEASURED[0]


def _host(machine: str, flags: set[str]) -> HostInfo:
    return replace(host_info(), machine=machine, cpu_flags=frozenset(flags))


def test_the_installed_tvm_offloads_to_no_cpu_library() -> None:
    # The apache-tvm wheel's runtime registers no cblas/mkl/dnnl function: every kernel is TVM's.
    assert library_offload() == ()


def test_the_measured_class_was_measured_slower_than_half_of_ort() -> None:
    assert 0 < MEASURED_CLASS.speed_vs_ort_fp32 < SLOW_BELOW
    assert "benchmarks.tvm" in MEASURED_CLASS.command


def test_a_host_in_the_measured_class_gets_the_note() -> None:
    note = speed_note(_host("x86_64", {"avx", "avx2", "fma", "avx512f", "avx512bw"}))
    assert note is not None
    assert f"{MEASURED_CLASS.speed_vs_ort_fp32:.2f}x ONNX Runtime FP32" in note
    assert MEASURED_CLASS.command in note and "build for cpu instead" in note


@pytest.mark.parametrize(
    ("machine", "flags"),
    [("x86_64", {"avx", "avx2", "fma"}), ("aarch64", {"asimd", "avx512f"})],
    ids=["avx2-only", "arm"],
)
def test_a_host_outside_every_measured_class_gets_none(machine: str, flags: set[str]) -> None:
    assert speed_note(_host(machine, flags)) is None


def test_duh_targets_marks_tvm_by_the_rule_on_this_host() -> None:
    host = host_info()
    expected = speed_note(host)
    result = CliRunner().invoke(app, ["targets", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)["targets"]}
    for name in ("tvm:cpu-fp32", "tvm:cpu-int8"):
        assert rows[name]["available"] is True
        assert rows[name]["note"] == expected
        assert rows[name]["slow"] is (expected is not None)
    assert rows["onnxruntime:cpu-fp32"]["slow"] is False and rows["cpu"]["note"] is None
    if platform.machine() == "x86_64" and host.has("avx512f"):
        assert rows["tvm:cpu-fp32"]["slow"] is True  # this host class was measured
    text = CliRunner().invoke(app, ["targets"])
    assert text.exit_code == 0
    assert ("available, slow" in text.output) is (expected is not None)
