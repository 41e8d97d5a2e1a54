"""Which dynamic dimension synthetic inputs treat as the batch: a fixed-batch image whose height
and width are dynamic (a fully convolutional detector exported with ``--dynamic x:2 x:3``) gets
sizes for both sides, not a side of 1 that its convolutions cannot take."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import duh
from duh.compiler import build as build_model
from duh.runtime import TensorSpec, batch_axis, synthetic_shapes


@pytest.mark.parametrize(
    ("shape", "axis"),
    [
        ((1, 3, "h", "w"), None),  # fixed batch: both sides are sizes
        ((1, 3, "s53", "s0"), None),  # dynamo's names, same
        (("N", 3, "H", "W"), 0),
        (("s0", 128), 0),
        ((2, "batch_size", 64), 1),  # an RNN state [directions, batch, hidden]
        ((2, "n", 64), 1),
        (("seq_len", 1, 80), None),  # time first: a length, not a batch
        (("sequence",), None),
        ((1, 3, 224, 224), None),
        ((-1, "height", "width", 3), 0),  # paddle's -1 batch
        (("d0", 3, "d1", "d2"), 0),  # paddle2onnx numbers its dims: d0 is no "d" (a depth)
        (("dim_0", "dim_1"), 0),
        (("d", 3), None),
        (("h1", 3), None),
    ],
)
def test_the_batch_axis(shape: tuple[object, ...], axis: int | None) -> None:
    assert batch_axis(shape) == axis


def test_a_fixed_batch_image_gets_sizes_for_its_sides() -> None:
    spec = TensorSpec("x", "float32", (1, 3, "h", "w"))
    assert synthetic_shapes([spec])["x"] == (1, 3, 32, 32)
    assert synthetic_shapes([spec], batch=2)["x"] == (1, 3, 64, 64)
    batched = TensorSpec("x", "float32", ("n", 3, "h", "w"))
    assert synthetic_shapes([batched], batch=2)["x"] == (2, 3, 64, 64)


def _fully_convolutional(path: Path) -> Path:
    """Three 3x3 convs with 2x pooling on [1, 3, H, W]: a side of 1 cannot run it."""
    rng = np.random.default_rng(0)
    nodes, inits, x, cin = [], [], "x", 3
    for i, cout in enumerate((8, 16, 4)):
        w = rng.standard_normal((cout, cin, 3, 3)).astype(np.float32) * 0.3
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        nodes.append(
            helper.make_node("MaxPool", [f"r{i}"], [f"p{i}"], kernel_shape=[2, 2], strides=[2, 2])
        )
        x, cin = f"p{i}", cout
    graph = helper.make_graph(
        nodes,
        "fcn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 4, None, None])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("target", ["onnxruntime:cpu-fp32", "openvino:cpu-fp32"])
def test_a_fixed_batch_dynamic_side_model_builds_and_keeps_its_sides(
    tmp_path: Path, target: str
) -> None:
    model = _fully_convolutional(tmp_path / "fcn.onnx")
    result = build_model(model, target, tmp_path / "fcn.duh")
    assert result.manifest is not None and result.manifest.checks["passed"]
    # verified on sizes the model takes (32 and 64 a side), not on a side of 1
    assert result.manifest.checks["samples"] >= 2
    session = duh.load(tmp_path / "fcn.duh")
    for h, w in ((40, 56), (97, 33)):
        [out] = session.run({"x": np.zeros((1, 3, h, w), np.float32)}).values()
        assert out.shape[:2] == (1, 4) and out.shape[2] > 0 and out.shape[3] > 0
