"""The float hint of OpenVINO INT8 artifacts: pinned by --option, or measured with a margin that
keeps two builds of the same model alike (the manifest holds no timings)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from duh.errors import ConfigError
from duh.host import host_info
from duh.targets.openvino._hint import HINT_OPTION, pinned_hint

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
DIGITS, CALIB = FIXTURES / "digits_cnn.onnx", FIXTURES / "digits_calib.npz"


def test_auto_measures_and_a_pin_names_its_option() -> None:
    host = host_info()
    assert pinned_hint({}, host) is None
    assert pinned_hint({HINT_OPTION: "auto"}, host) is None
    pinned = pinned_hint({HINT_OPTION: "F32"}, host)
    assert pinned is not None and pinned.hint == "f32" and HINT_OPTION in pinned.note


def test_a_bad_value_and_bf16_without_bf16_hardware_are_refused() -> None:
    host = host_info()
    with pytest.raises(ConfigError, match="give auto, f32 or bf16"):
        pinned_hint({HINT_OPTION: "fp16"}, host)
    plain = dataclasses.replace(host, cpu_flags=frozenset({"avx2"}))
    with pytest.raises(ConfigError, match="no AVX-512 BF16 or AMX"):
        pinned_hint({HINT_OPTION: "bf16"}, plain)


def _build(out: Path, *extra: str) -> dict:
    cmd = [sys.executable, "-m", "duh", "build", str(DIGITS), "-t", "openvino:cpu-int8"]
    done = subprocess.run(
        [*cmd, "--calib", str(CALIB), "-o", str(out), "--no-cache", *extra],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return json.loads((out / "manifest.json").read_text())


def test_the_pinned_hint_is_recorded_and_the_notes_hold_no_timings(tmp_path: Path) -> None:
    pinned = _build(tmp_path / "pinned.duh", "--option", f"{HINT_OPTION}=f32")
    assert pinned["engine_config"]["inference_precision_hint"] == "f32"
    measured = _build(tmp_path / "auto.duh")
    notes = json.dumps(measured).lower()
    hint = measured["engine_config"]["inference_precision_hint"]
    assert hint in ("f32", "bf16")
    # The measured timings go to the log: the manifest says what was chosen, not how fast.
    if host_info().has("amx_bf16") or host_info().has("avx512_bf16"):
        assert "float ops of the int8 graph" in notes
    assert " ms" not in notes
