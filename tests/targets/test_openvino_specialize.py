"""OpenVINO and Ifs whose branches differ in rank (PyTorch's export of ``x.squeeze(d)``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from duh.compiler import build as build_model
from duh.targets.openvino._specialize import squeeze_ifs_to_squeeze
from tests._if_models import rank_if_model

ov = pytest.importorskip("openvino")


def test_the_squeeze_branch_replaces_the_if_and_computes_the_same(tmp_path: Path) -> None:
    path = rank_if_model(tmp_path / "m.onnx")
    special, count = squeeze_ifs_to_squeeze(onnx.load(str(path)))
    assert count == 1
    assert "If" not in {n.op_type for n in special.graph.node}
    onnx.checker.check_model(special)
    x = np.random.default_rng(1).standard_normal((2, 4, 1)).astype(np.float32)
    runs = [
        ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        for m in (str(path), special.SerializeToString())
    ]
    np.testing.assert_array_equal(runs[0], runs[1])


def test_openvino_refuses_the_if_as_it_is(tmp_path: Path) -> None:
    path = rank_if_model(tmp_path / "m.onnx")
    with pytest.raises(Exception, match="rank"):  # OpenVINO raises untyped errors
        ov.convert_model(str(path))


def test_openvino_build_specializes_the_if_and_matches_the_source(tmp_path: Path) -> None:
    path = rank_if_model(tmp_path / "m.onnx")
    data = tmp_path / "check.npz"
    np.savez(data, x=np.random.default_rng(2).standard_normal((4, 4, 1)).astype(np.float32))
    result = build_model(path, "openvino:cpu-fp32", tmp_path / "m.duh", check_data=data)
    assert result.output is not None
    manifest = json.loads((result.output / "manifest.json").read_text())
    notes = manifest["build"]["compile_notes"]
    assert any("were made Squeeze" in note for note in notes), notes


def _silero() -> tuple[Path, Path]:
    from fixtures.fetch_models import cache_dir

    model, data = cache_dir() / "silero_vad.onnx", cache_dir() / "silero_vad.check.npz"
    if not (model.is_file() and data.is_file()):
        pytest.skip("silero_vad is not in the model cache (python -m fixtures.zoo_data)")
    return model, data


@pytest.mark.slow
def test_silero_vad_builds_for_openvino_and_matches_the_source(tmp_path: Path) -> None:
    model, data = _silero()
    result = build_model(model, "openvino:cpu-fp32", tmp_path / "vad.duh", check_data=data)
    assert result.output is not None and result.manifest is not None
    assert result.manifest.checks["passed"] and result.manifest.checks["precision"] == "fp32"


@pytest.mark.slow
def test_shapes_that_break_a_branch_of_silero_vad_are_refused_in_one_line(tmp_path: Path) -> None:
    from duh.compiler import ingest
    from duh.errors import ModelError

    model, _ = _silero()
    with pytest.raises(ModelError) as info:
        ingest(model, {"input": (2, 576), "state": (2, 2, 128)})
    message = str(info.value)
    assert "\n" not in message and "build without --shape" in message
    assert ingest(model).inputs  # left dynamic, the same model loads
