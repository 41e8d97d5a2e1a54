"""A rewrite the model's opset cannot hold is left out, with a note; never a model that fails to load.

On an opset-11 model the fuse pass used to let ONNX Runtime's transformer optimizer write
LayerNormalization (opset 17), and the build failed with "No Op registered for
LayerNormalization with domain_version of 11".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from duh.passes import create_pass
from tests.passes._models import ctx, mlp_block_model, run_ort

X = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)


def _ops(model: onnx.ModelProto) -> list[tuple[str, str]]:
    return [(n.domain, n.op_type) for n in model.graph.node]


def _same_numbers(fused: onnx.ModelProto, source: onnx.ModelProto) -> None:
    onnx.checker.check_model(fused, full_check=True)  # every op exists at the model's opset
    np.testing.assert_allclose(
        run_ort(fused, {"x": X})[0], run_ort(source, {"x": X})[0], rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_old_opsets_get_no_layernormalization_and_say_why(
    tmp_path: Path, opset: int, engine: str
) -> None:
    model = mlp_block_model(opset=opset)
    result = create_pass("fuse").run(model, ctx(tmp_path, engine=engine))
    ops = _ops(result.model)
    assert ("", "LayerNormalization") not in ops and ("", "Gelu") not in ops
    assert (
        f"layernorm: 1 match(es) left as they were: opset {opset} has no LayerNormalization "
        "(needs 17)"
    ) in result.notes
    if engine == "onnxruntime":
        # ONNX Runtime's contrib Gelu exists at every opset: it still stands in.
        assert ("com.microsoft", "Gelu") in ops and "gelu: 1" in result.notes
    else:
        assert "Erf" in [op for _, op in ops]
        assert (
            f"gelu: 1 match(es) left as they were: opset {opset} has no Gelu (needs 20)"
            in result.notes
        )
    assert "matmul-add-gemm: 2" in result.notes
    _same_numbers(result.model, model)


@pytest.mark.parametrize("opset", [11, 13])
def test_onnx_runtime_transformer_fusions_are_dropped_where_the_opset_lacks_their_ops(
    tmp_path: Path, opset: int
) -> None:
    model = mlp_block_model(opset=opset)
    result = create_pass("fuse", {"transformer": "bert"}).run(model, ctx(tmp_path))
    assert ("", "LayerNormalization") not in _ops(result.model)
    assert any(
        n.startswith(
            "onnxruntime transformer fusions skipped: they emit LayerNormalization, "
            f"which opset {opset} lacks"
        )
        for n in result.notes
    ), result.notes
    _same_numbers(result.model, model)


def test_a_failing_transformer_optimizer_is_a_note_and_the_model_goes_on(tmp_path: Path) -> None:
    # An epsilon with one value per feature: ORT's LayerNorm fusion raises ValueError on it.
    model = mlp_block_model(opset=17)
    for init in model.graph.initializer:
        if init.name == "eps":
            init.CopyFrom(numpy_helper.from_array(np.full(32, 1e-5, np.float32), "eps"))
    result = create_pass("fuse", {"transformer": "bert"}).run(model, ctx(tmp_path))
    failed = [n for n in result.notes if "onnxruntime transformer fusions skipped" in n]
    assert failed and "its optimizer failed (ValueError: " in failed[0] and "\n" not in failed[0]
    assert ("", "LayerNormalization") not in _ops(result.model)  # eps is not one constant
    _same_numbers(result.model, model)


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_opset_17_still_fuses(tmp_path: Path, engine: str) -> None:
    model = mlp_block_model(opset=17)
    result = create_pass("fuse").run(model, ctx(tmp_path, engine=engine))
    assert ("", "LayerNormalization") in _ops(result.model)
    assert "layernorm: 1" in result.notes
    assert not any(
        "left as they were: opset 17 has no LayerNormalization" in n for n in result.notes
    )
    _same_numbers(result.model, model)


def test_opset_17_keeps_onnx_runtime_transformer_fusions(tmp_path: Path) -> None:
    model = mlp_block_model(opset=17)
    result = create_pass("fuse", {"transformer": "bert"}).run(model, ctx(tmp_path))
    assert any(n.startswith("onnxruntime transformer fusions: ") for n in result.notes)
    assert ("", "LayerNormalization") in _ops(result.model)
    _same_numbers(result.model, model)


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_opset_21_gets_onnx_gelu(tmp_path: Path, engine: str) -> None:
    model = mlp_block_model(opset=21)
    result = create_pass("fuse").run(model, ctx(tmp_path, engine=engine))
    assert [op for _, op in _ops(result.model)] == ["Gemm", "LayerNormalization", "Gelu", "Gemm"]
    assert ("", "Gelu") in _ops(result.model)
    _same_numbers(result.model, model)


def test_asking_for_a_newer_opset_converts_first(tmp_path: Path) -> None:
    model = mlp_block_model(opset=11)
    result = create_pass("fuse", {"opset": 17}).run(model, ctx(tmp_path, engine="openvino"))
    assert result.notes[0] == "opset 11 -> 17"
    assert ("", "LayerNormalization") in _ops(result.model)
    _same_numbers(result.model, model)
