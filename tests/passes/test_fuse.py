from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest

from duh.passes import create_pass
from duh.passes._rules import GraphView
from duh.passes._rules_linear import MatMulAddToGemm
from tests.passes._models import conv_bn_model, ctx, mlp_block_model, run_ort, run_ov


def test_conv_bn_folds_and_keeps_the_numbers(tmp_path: Path) -> None:
    model = conv_bn_model()
    x = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)
    result = create_pass("fuse", {"rules": ("conv-bn",)}).run(model, ctx(tmp_path))
    ops = [n.op_type for n in result.model.graph.node]
    assert ops.count("BatchNormalization") == 0 and ops.count("Conv") == 2
    assert "conv-bn: 2" in result.notes
    np.testing.assert_allclose(
        run_ort(result.model, {"x": x})[0], run_ort(model, {"x": x})[0], rtol=1e-5, atol=1e-5
    )


def test_layernorm_gelu_and_gemm_rules_on_onnx_runtime(tmp_path: Path) -> None:
    model = mlp_block_model(opset=17)
    x = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    result = create_pass("fuse").run(model, ctx(tmp_path))
    ops = [(n.domain, n.op_type) for n in result.model.graph.node]
    # opset 17 has no Gelu: on ONNX Runtime the contrib Gelu stands in.
    assert ops == [
        ("", "Gemm"),
        ("", "LayerNormalization"),
        ("com.microsoft", "Gelu"),
        ("", "Gemm"),
    ]
    np.testing.assert_allclose(
        run_ort(result.model, {"x": x})[0], run_ort(model, {"x": x})[0], rtol=1e-4, atol=1e-5
    )


def test_opset_20_gelu_runs_on_openvino_too(tmp_path: Path) -> None:
    model = mlp_block_model(opset=20)
    x = np.random.default_rng(1).standard_normal((2, 16)).astype(np.float32)
    result = create_pass("fuse").run(model, ctx(tmp_path, engine="openvino"))
    ops = [n.op_type for n in result.model.graph.node]
    assert ops == ["Gemm", "LayerNormalization", "Gelu", "Gemm"]
    want = run_ort(model, {"x": x})[0]
    np.testing.assert_allclose(
        run_ov(result.model, {"x": x}, tmp_path)[0], want, rtol=1e-4, atol=1e-4
    )


def test_a_rule_that_cannot_apply_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # On OpenVINO at opset 17 there is no Gelu to rewrite to: the pattern stays, with a reason.
    model = mlp_block_model(opset=17)
    with caplog.at_level(logging.DEBUG, logger="duh.passes"):
        result = create_pass("fuse").run(model, ctx(tmp_path, engine="openvino"))
    assert "Erf" in [n.op_type for n in result.model.graph.node]
    assert "rule gelu" in caplog.text and "opset 17 has no Gelu" in caplog.text


def test_matmul_add_on_rank_3_is_not_a_gemm(tmp_path: Path) -> None:
    model = mlp_block_model()
    model.graph.input[0].type.tensor_type.shape.ClearField("dim")
    for d in ("b", "t", 16):
        dim = model.graph.input[0].type.tensor_type.shape.dim.add()
        if isinstance(d, int):
            dim.dim_value = d
        else:
            dim.dim_param = d
    view = GraphView(onnx.shape_inference.infer_shapes(model))
    add = next(n for n in view.model.graph.node if n.name == "add1")
    found = MatMulAddToGemm().match(view, add)
    assert not isinstance(found, str)
    assert MatMulAddToGemm().check(view, found) == "MatMul input A has rank 3; Gemm needs 2"


def test_bert_gets_attention_and_skip_layernorm_on_onnx_runtime(
    tmp_path: Path, bert_model: Path
) -> None:
    model = onnx.load(str(bert_model))
    rng = np.random.default_rng(0)
    feed = {
        "input_ids": rng.integers(0, 100, (1, 16)).astype(np.int64),
        "attention_mask": np.ones((1, 16), np.int64),
    }
    feed["attention_mask"][0, 12:] = 0
    folded = create_pass("fold-constants").run(model, ctx(tmp_path)).model
    result = create_pass("fuse").run(folded, ctx(tmp_path))
    ops = {n.op_type for n in result.model.graph.node}
    assert {"Attention", "SkipLayerNormalization"} <= ops
    assert any("Attention 2" in n for n in result.notes)
    np.testing.assert_allclose(
        run_ort(result.model, feed)[0], run_ort(model, feed)[0], rtol=1e-3, atol=1e-4
    )
    # The contrib ops run on ONNX Runtime only: for OpenVINO the fusions stay off.
    other = create_pass("fuse").run(folded, ctx(tmp_path, engine="openvino"))
    assert "Attention" not in {n.op_type for n in other.model.graph.node}
