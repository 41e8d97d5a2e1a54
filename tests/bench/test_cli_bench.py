"""``duh bench`` on the command line: the JSON document, gates' exit codes, plots, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from duh.bench import GATE_EXIT_CODE
from duh.cli import app

runner = CliRunner()
QUICK = ["--window", "0.05", "--min-windows", "2", "--max-windows", "3", "--warmup", "3",
         "--no-memory"]

NUM = (int, float)
OPT_NUM = (int, float, type(None))
# The JSON report, key by key: a key added, renamed or retyped fails this test.
SCHEMA: dict[str, Any] = {
    "schema": str, "duh_version": str, "created": str, "gates": list, "warnings": list,
    "host": {"cpu": str, "cores": int, "cpu_flags": list, "cuda": list},
    "settings": dict, "peaks": list, "profiles": list,
    "subjects": [{
        "name": str, "kind": str, "location": str, "engine": str, "target": str,
        "threads": (int, type(None)), "options": dict, "peak_rss_mb": OPT_NUM, "load_s": OPT_NUM,
    }],
    "results": [{
        "subject": str, "scenario": str, "config": str, "batch": NUM, "streams": int,
        "latency_ms": {"count": int, "min": NUM, "p50": NUM, "p90": NUM, "p95": NUM, "p99": NUM,
                       "max": NUM, "mean": NUM, "std": NUM},
        "cv": NUM, "throughput": {"inferences_per_s": NUM, "samples_per_s": NUM},
        "stability": {"windows": int, "window_medians_ms": list, "spread": NUM, "stable": bool},
        "server_scenario": (dict, type(None)), "server_side": (dict, type(None)),
        "headline": {"metric": str, "value": NUM}, "speedup": OPT_NUM,
    }],
}


def _check(value: Any, shape: Any, where: str = "$") -> None:
    if isinstance(shape, dict):
        assert isinstance(value, dict), where
        assert set(value) == set(shape), f"{where}: keys {sorted(value)} != {sorted(shape)}"
        for key, sub in shape.items():
            _check(value[key], sub, f"{where}.{key}")
    elif isinstance(shape, list):
        assert isinstance(value, list) and value, where
        for i, item in enumerate(value):
            _check(item, shape[0], f"{where}[{i}]")
    else:
        assert isinstance(value, shape) and not (shape is not bool and value is True), where


def _run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["bench", *args])
    return result.exit_code, result.stdout, result.stderr


def test_json_report_follows_the_schema(digits_ort: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    source = Path(__file__).resolve().parents[2] / "fixtures" / "digits_cnn.onnx"
    code, stdout, _ = _run(str(digits_ort), str(source), *QUICK, "--batch", "1,2",
                           "-s", "single-stream,offline", "--json", str(out))
    assert code == 0, stdout
    doc = json.loads(out.read_text())
    _check(doc, SCHEMA)
    assert doc["schema"] == "duh.bench/1"
    assert [r["scenario"] for r in doc["results"]] == ["single-stream"] * 2 + ["offline"] * 4
    assert doc["results"][0]["headline"]["metric"] == "p90_ms"
    assert doc["results"][2]["headline"]["metric"] == "samples_per_s"
    assert "single-stream · batch 1" in stdout and "#2 digits_cnn.onnx" in stdout


def test_json_to_stdout_is_only_json(digits_ort: Path) -> None:
    code, stdout, _ = _run(str(digits_ort), *QUICK, "--json", "-")
    assert code == 0
    assert json.loads(stdout)["results"][0]["subject"] == digits_ort.name


def test_gates_pass_fail_and_say_which(digits_ort: Path, digits_ov: Path) -> None:
    code, stdout, _ = _run(str(digits_ort), str(digits_ov), *QUICK, "--fail-if", "p99_ms>100000",
                           "--fail-if", "speedup<0.0001")
    assert code == 0 and "gate 'p99_ms>100000': pass" in stdout
    code, _, stderr = _run(str(digits_ort), str(digits_ov), *QUICK, "--fail-if", "p50_ms<100000",
                           "--fail-if", f"{digits_ov.name}:speedup>0")
    assert code == GATE_EXIT_CODE
    assert f"gate failed: 'p50_ms<100000': {digits_ort.name} single-stream batch 1: p50_ms" in stderr
    assert f"'{digits_ov.name}:speedup>0': {digits_ov.name} single-stream batch 1: speedup" in stderr
    assert f"{digits_ort.name} single-stream batch 1: speedup" not in stderr  # baseline excluded


def test_a_gate_that_checks_nothing_fails(digits_ort: Path) -> None:
    code, _, stderr = _run(str(digits_ort), *QUICK, "--fail-if", "speedup<1.5")
    assert code == GATE_EXIT_CODE and "speedup needs a second subject" in stderr


@pytest.mark.parametrize(
    ("gate", "message"),
    [("p99>20", "unknown metric 'p99'"), ("p99_ms=>20", "is not [SUBJECT:]METRIC OP VALUE")],
)
def test_a_malformed_gate_is_refused_before_measuring(digits_ort: Path, gate: str, message: str) -> None:
    code, stdout, stderr = _run(str(digits_ort), *QUICK, "--fail-if", gate)
    assert code == 2 and message in stderr and "single-stream" not in stdout


def test_plot_writes_a_png(digits_ort: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "bench.png"
    code, _, _ = _run(str(digits_ort), *QUICK, "--plot", str(out))
    assert code == 0 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_broken_artifact_is_one_red_line_and_exit_7(digits_ort: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.duh"
    shutil.copytree(digits_ort, broken)
    (broken / "manifest.json").write_text("{not json")
    code, _, stderr = _run(str(broken), *QUICK)
    assert code == 7
    assert "manifest.json is not valid JSON" in stderr and "rebuild it" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    ("shape", "message"),
    [("input=1x3x8x8", "sets axis 1 to 3, but input 'input' is fixed at [batch, 1, 8, 8]"),
     ("pixels=1x1x8x8", "'pixels', which is not an input of this model"),
     ("input=1x1x8", "has rank 3"), ("input:1x1x8x8", "is not NAME=DxDxD")],
)
def test_a_wrong_shape_is_exit_2_with_the_reason(digits_ort: Path, shape: str, message: str) -> None:
    code, _, stderr = _run(str(digits_ort), *QUICK, "--shape", shape)
    assert code == 2 and message in " ".join(stderr.split())


def test_options_imply_scenarios(digits_ort: Path) -> None:
    code, stdout, _ = _run(str(digits_ort), *QUICK, "--concurrency", "1:3:2", "--json", "-")
    assert code == 0
    configs = [r["config"] for r in json.loads(stdout)["results"]]
    assert configs == ["streams 1 batch 1", "streams 3 batch 1"]
