"""Precision-aware selection: ``auto`` (and ``cpu`` under an accuracy budget) builds fp32, bf16 and
int8 on every engine, keeps the fastest within the budget, and says why the winner won.

Real engines on the committed digits CNNs; bf16 is what OpenVINO runs where the CPU has AVX-512
BF16 or AMX (the tests that build it skip elsewhere).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from duh.cli import app
from duh.compiler import AccuracyBudget, build
from duh.errors import DuhError
from duh.host import host_info
from duh.targets import TargetSpec, parse_target, resolve

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
CALIB = FIXTURES / "digits_calib.npz"
TEST = FIXTURES / "digits_test.npz"
runner = CliRunner()

HOST = host_info()
BF16 = HOST.has("avx512_bf16") or HOST.has("amx_bf16")
needs_bf16 = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None or not BF16,
    reason="needs OpenVINO on a CPU with AVX-512 BF16 or AMX-BF16",
)


def _names(specs: tuple[TargetSpec, ...]) -> set[str]:
    return {s.name for s in specs}


def test_auto_tries_fp32_bf16_and_int8_only_with_calibration() -> None:
    calibrated = resolve(parse_target("auto"), HOST, calibrated=True)
    plain = resolve(parse_target("auto"), HOST, calibrated=False)
    assert calibrated.precision_aware and plain.precision_aware
    assert {"onnxruntime:cpu-fp32", "onnxruntime:cpu-int8"} <= _names(calibrated.specs)
    assert not any(s.precision == "int8" for s in plain.specs)
    assert any("cpu-int8 not tried" in n and "--calib" in n for n in plain.not_tried)
    # The CPU's reduced float is bf16: ONNX Runtime has no fp16 CPU kernels.
    assert not any(s.device == "cpu" and s.precision == "fp16" for s in calibrated.specs)


def test_bf16_is_left_out_with_the_reason_where_the_cpu_lacks_it() -> None:
    bare = dataclasses.replace(HOST, cpu_flags=frozenset({"avx2", "fma"}), cuda=())
    got = resolve(parse_target("auto"), bare, calibrated=True)
    assert not any(s.precision == "bf16" for s in got.specs)
    line = next(n for n in got.not_tried if n.startswith("cpu-bf16 not tried"))
    assert "AVX-512 BF16" in line
    assert any(n.startswith("cuda not tried") and "no CUDA device" in n for n in got.not_tried)


def test_cpu_competes_on_precision_only_under_a_budget() -> None:
    plain = resolve(parse_target("cpu"), HOST, calibrated=True)
    assert not plain.precision_aware and {s.precision for s in plain.specs} == {"fp32"}
    budgeted = resolve(parse_target("cpu"), HOST, budget=True, calibrated=True)
    assert budgeted.precision_aware and {s.device for s in budgeted.specs} == {"cpu"}
    assert {"fp32", "int8"} <= {s.precision for s in budgeted.specs}
    # A precision typed out is the user's choice, budget or not.
    pinned = resolve(parse_target("cpu-fp32"), HOST, budget=True, calibrated=True)
    assert {s.precision for s in pinned.specs} == {"fp32"} and not pinned.not_tried


def test_auto_dry_run_says_what_it_did_not_try(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["build", str(FIXTURES / "digits_cnn.onnx"), "-t", "auto", "--dry-run",
              "-o", str(tmp_path / "m.duh")],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "onnxruntime:cpu-fp32" in result.stdout
    assert "cpu-int8 not tried: no calibration data" in result.stdout
    assert not (tmp_path / "m.duh").exists()


@needs_bf16
def test_a_tight_budget_drops_bf16_with_its_numbers_and_keeps_fp32(tmp_path: Path) -> None:
    # mse of the logits against fp32's within 1e-6: bf16's ~3e-3 is over it, fp32's ~0 is not.
    budget = AccuracyBudget(TEST, "mse", 1e-6, samples=64)
    out = tmp_path / "m.duh"
    result = build(FIXTURES / "outlier_cnn.onnx", "auto", out, accuracy=budget, cache=False)
    assert result.chosen is not None and result.chosen.precision == "fp32"
    by_name = {c.spec.name: c for c in result.candidates}
    bf16 = by_name["openvino:cpu-bf16"]
    assert bf16.score is not None and not bf16.score.met and bf16.score.drop > 1e-6
    assert bf16.median_ms is not None  # dropped, but timed: the report says what it cost
    kept = [c for c in result.candidates if c.usable]
    assert all(c.score is not None and c.score.met for c in kept)
    chosen = by_name[result.chosen.name]
    assert chosen.median_ms == min(c.median_ms for c in kept if c.median_ms is not None)
    assert result.reason.startswith(f"{result.chosen.name}: ")
    assert "fastest within the budget (mse drop" in result.reason
    assert "openvino:cpu-bf16" in result.reason and "dropped: mse drop" in result.reason
    assert any("cpu-int8 not tried" in n for n in result.not_tried)
    selection = json.loads((out / "manifest.json").read_text())["selection"]
    assert selection["reason"] == result.reason
    assert any("cpu-int8 not tried" in n for n in selection["not_tried"])
    rows = {c["target"]: c for c in selection["candidates"]}
    assert rows["openvino:cpu-bf16"]["budget"]["within_budget"] is False
    assert rows[result.chosen.name]["budget"]["within_budget"] is True


def test_cli_cpu_with_a_budget_measures_every_precision_and_says_why(tmp_path: Path) -> None:
    out = tmp_path / "m.duh"
    result = runner.invoke(
        app,
        ["build", str(FIXTURES / "digits_cnn.onnx"), "-t", "cpu", "--calib", str(CALIB),
         "--eval", str(TEST), "--labels", "label", "--max-drop", "0.01", "--no-cache",
         "-o", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    selection = manifest["selection"]
    rows = selection["candidates"]
    precisions = {r["target"].rsplit("-", 1)[1] for r in rows}
    assert {"fp32", "int8"} <= precisions and ("bf16" in precisions) is BF16
    within = [r for r in rows if r["budget"] and r["budget"]["within_budget"] and not r["error"]]
    fastest = min(within, key=lambda r: r["median_ms"])
    assert selection["chosen"] == fastest["target"] == manifest["target"]["resolved"]
    assert manifest["build"]["accuracy"]["drop"] <= 0.01
    assert manifest["build"]["accuracy"]["precision"] == manifest["target"]["precision"]
    text = " ".join(result.stdout.split())  # rich wraps long lines
    assert f"selection: {fastest['target']}: " in text and "fastest within the budget" in text
    assert "slower" in text


def test_no_candidate_within_the_budget_fails_with_each_ones_numbers(tmp_path: Path) -> None:
    # 90% of the weights pruned on every candidate: none stays within half a point of top-1.
    budget = AccuracyBudget(TEST, "top1", 0.005, labels="label", samples=200)
    with pytest.raises(DuhError) as info:
        build(
            FIXTURES / "digits_cnn.onnx", "cpu", tmp_path / "m.duh", passes="simplify,prune",
            pass_options={"prune": {"sparsity": 0.9}}, accuracy=budget, cache=False,
        )  # fmt: skip
    text = str(info.value)
    assert "\n" not in text
    assert "no candidate for 'cpu' meets the accuracy budget" in text
    assert "onnxruntime:cpu-fp32 misses the accuracy budget" in text and "> 0.005" in text
    assert not (tmp_path / "m.duh").exists()
