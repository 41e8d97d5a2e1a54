from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

import duh
from duh.compiler import build
from duh.errors import ConfigError, TargetError
from duh.runtime import read_manifest
from tests._host import needs_bf16

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
TARGETS = [
    "onnxruntime:cpu-fp32",
    "openvino:cpu-fp32",
    pytest.param("openvino:cpu-bf16", marks=needs_bf16),
]
MODELS = ["digits_cnn.onnx", "mlp_external.onnx", "multi_io.onnx"]
TOL = {"fp32": (1e-4, 1e-5), "bf16": (5e-2, 5e-2)}


def _feed(session: duh.Session, batch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    feed = {}
    for spec in session.inputs:
        shape = [d if isinstance(d, int) else batch for d in spec.shape]
        if spec.dtype.startswith("float"):
            feed[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        else:
            feed[spec.name] = rng.integers(0, 5, shape).astype(spec.dtype)
    return feed


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("model", MODELS)
def test_every_target_builds_every_fixture(
    built: Callable[..., Path], model: str, target: str
) -> None:
    artifact = built(model, target)
    manifest = read_manifest(artifact)
    assert manifest.target["resolved"] == target
    assert manifest.checks["passed"] is True
    rtol, atol = TOL[target.rsplit("-", 1)[1]]
    with duh.load(artifact) as session, duh.load(FIXTURES / model) as source:
        for batch in (1, 5):  # every fixture has a dynamic batch: it must survive the build
            feed = _feed(session, batch)
            got, want = session.run(feed), source.run(feed)
            for name, value in want.items():
                assert got[name].shape == value.shape
                np.testing.assert_allclose(
                    got[name], value, rtol=rtol, atol=atol * max(1.0, float(np.abs(value).max()))
                )


def test_manifest_records_what_the_design_asks(built: Callable[..., Path]) -> None:
    artifact = built("digits_cnn.onnx", "onnxruntime:cpu-fp32")
    data = json.loads((artifact / "manifest.json").read_text())
    assert data["format_version"] == 1
    assert data["engine"]["name"] == "onnxruntime" and data["engine"]["version"]
    assert data["source"]["sha256"] == duh.runtime._manifest.sha256_file(
        FIXTURES / "digits_cnn.onnx"
    )
    assert data["target"] == {
        "requested": "onnxruntime:cpu-fp32",
        "resolved": "onnxruntime:cpu-fp32",
        "engine": "onnxruntime",
        "device": "cpu",
        "precision": "fp32",
    }
    assert [p["name"] for p in data["passes"]] == ["simplify", "fold-constants", "fuse", "cleanup"]
    assert all(p["seconds"] >= 0 and p["nodes_before"] >= p["nodes_after"] for p in data["passes"])
    assert data["signature"]["inputs"] == [
        {"name": "input", "dtype": "float32", "shape": ["batch", 1, 8, 8]}
    ]
    assert set(data["files"]) == {"model.onnx"}
    assert data["checks"]["passed"] and data["checks"]["tolerance"]["atol"] == 1e-4
    optimized = onnx.load(str(artifact / "model.onnx"))
    assert optimized.ir_version <= 13


def test_a_short_name_measures_candidates_and_keeps_the_fastest(tmp_path: Path) -> None:
    result = build(FIXTURES / "multi_io.onnx", "cpu", tmp_path / "m.duh", select_budget_s=0.2)
    engines = {c.spec.engine for c in result.candidates}
    assert engines == {"onnxruntime", "openvino"}
    medians = {c.spec.name: c.median_ms for c in result.candidates}
    assert all(m is not None and m > 0 for m in medians.values())
    assert result.chosen is not None
    assert medians[result.chosen.name] == min(medians.values())
    selection = read_manifest(tmp_path / "m.duh").selection
    assert selection["chosen"] == result.chosen.name and len(selection["candidates"]) == 2


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "dry.duh"
    result = build(FIXTURES / "digits_cnn.onnx", "openvino:cpu-fp32", out, dry_run=True)
    assert result.dry_run and result.output is None
    assert [p["name"] for p in result.candidates[0].passes] == [
        "lower-ml",
        "lower-sequences",
        "simplify",
        "fold-constants",
        "fuse",
        "cleanup",
    ]
    assert result.candidates[0].passes[2]["config"]["skip_fuse_bn"] is False
    assert list(tmp_path.iterdir()) == []


def test_passes_override_the_default_pipeline(tmp_path: Path) -> None:
    build(
        FIXTURES / "digits_cnn.onnx", "onnxruntime:cpu-fp32", tmp_path / "a.duh", passes="cleanup"
    )
    assert [p["name"] for p in read_manifest(tmp_path / "a.duh").passes] == ["cleanup"]
    with pytest.raises(ConfigError, match="unknown pass 'nope'"):
        build(FIXTURES / "digits_cnn.onnx", "cpu", tmp_path / "b.duh", passes="cleanup,nope")
    assert not (tmp_path / "b.duh").exists()


def test_failed_verification_leaves_nothing_behind(tmp_path: Path) -> None:
    from duh.compiler.verify import Tolerance

    impossible = Tolerance(atol=0.0, rtol=0.0, min_cosine=1.5)
    # on synthetic inputs the error points to real ones (--check-data)
    with pytest.raises(
        TargetError,
        match=r"no candidate .* passed verification .*cosine.*"
        r"synthetic inputs: verify on real inputs with --check-data FILE",
    ):
        build(
            FIXTURES / "digits_cnn.onnx",
            "openvino:cpu-fp32",
            tmp_path / "x.duh",
            tolerance=impossible,
        )
    assert list(tmp_path.iterdir()) == []


def test_a_rebuild_replaces_the_old_artifact(tmp_path: Path) -> None:
    out = tmp_path / "r.duh"
    build(FIXTURES / "multi_io.onnx", "onnxruntime:cpu-fp32", out)
    build(FIXTURES / "multi_io.onnx", "openvino:cpu-fp32", out)
    assert read_manifest(out).engine == "openvino"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.duh"]


def test_no_verify_is_recorded(tmp_path: Path) -> None:
    build(FIXTURES / "multi_io.onnx", "onnxruntime:cpu-fp32", tmp_path / "n.duh", verify=False)
    assert read_manifest(tmp_path / "n.duh").checks == {"passed": None, "skipped": True}


def test_output_that_is_not_an_artifact_is_not_replaced(tmp_path: Path) -> None:
    precious = tmp_path / "docs"
    precious.mkdir()
    (precious / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a duh artifact; refusing to replace it"):
        build(FIXTURES / "multi_io.onnx", "onnxruntime:cpu-fp32", precious)
    assert (precious / "keep.txt").read_text() == "mine"
