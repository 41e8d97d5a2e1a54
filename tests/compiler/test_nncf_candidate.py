"""A calibrated openvino int8 build of a transformer also tries NNCF's static INT8; OpenVINO
INT8 artifacts record the float-op hint they picked by timing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest

import duh
from duh.host import host_info
from tests.passes.test_mask_exclusion import _attention_block, _feeds

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino missing"),
]


def _files(tmp_path: Path) -> tuple[Path, Path, Path]:
    model = tmp_path / "attention.onnx"
    onnx.save_model(_attention_block(), str(model))
    calib, check = tmp_path / "calib.npz", tmp_path / "check.npz"
    for path, feeds in ((calib, _feeds(32, 1)), (check, _feeds(4, 2))):
        np.savez(path, **{k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]})
    return model, calib, check


def _modes(result: duh.BuildResult) -> list[str]:
    return [
        next(str(p["config"]["mode"]) for p in c.passes if p["name"] == "quantize")
        for c in result.candidates
    ]


@pytest.mark.skipif(importlib.util.find_spec("nncf") is None, reason="nncf not installed")
def test_transformer_int8_on_openvino_tries_nncf_and_a_cnn_does_not(tmp_path: Path) -> None:
    model, calib, _ = _files(tmp_path)
    result = duh.build(model, "openvino:cpu-int8", tmp_path / "a.duh", calib=calib, dry_run=True)
    assert _modes(result) == ["auto", "nncf"]
    cnn = Path(__file__).parents[2] / "fixtures" / "digits_cnn.onnx"
    result = duh.build(
        cnn, "openvino:cpu-int8", tmp_path / "b.duh", calib="synthetic", dry_run=True
    )
    assert _modes(result) == ["auto"]


def test_openvino_int8_records_the_float_hint_it_measured(tmp_path: Path) -> None:
    model, calib, check = _files(tmp_path)
    result = duh.build(
        model, "openvino:cpu-int8", tmp_path / "m.duh", calib=calib, check_data=check, cache=False
    )
    assert result.manifest is not None
    hint = result.manifest.engine_config["inference_precision_hint"]
    notes = result.manifest.build["compile_notes"]
    host = host_info()
    if host.has("amx_bf16") or host.has("avx512_bf16"):
        assert hint in ("f32", "bf16")
        assert any(n.startswith("float ops of the INT8 graph") and hint in n for n in notes)
    else:
        assert hint == "f32"
    session = duh.load(result.output)
    out = session.run(_feeds(1, 3)[0])["y"]
    assert out.shape == (1, 8, 16) and np.all(np.isfinite(out))


@pytest.mark.skipif(importlib.util.find_spec("nncf") is None, reason="nncf not installed")
def test_the_report_tells_two_openvino_int8_candidates_apart_and_stars_one(
    tmp_path: Path,
) -> None:
    from typer.testing import CliRunner

    from duh.cli import app

    model, calib, check = _files(tmp_path)
    args = ["build", str(model), "-t", "openvino:cpu-int8", "--calib", str(calib),
            "--check-data", str(check), "-o", str(tmp_path / "a.duh")]  # fmt: skip
    done = CliRunner().invoke(app, args, terminal_width=200)
    assert done.exit_code == 0, done.output
    rows = [line for line in done.output.splitlines() if "openvino:cpu-int8 (" in line]
    assert any("(auto)" in r for r in rows) and any("(nncf)" in r for r in rows), done.output
    assert sum("* openvino" in r for r in rows) == 1, done.output
