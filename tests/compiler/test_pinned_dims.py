"""Inputs declared all-dynamic whose weights allow one size only: ingest fixes that size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

import duh
from duh.cli import app
from duh.compiler import ingest
from duh.compiler._pinned import pin_weight_dims

ORT = "onnxruntime:cpu-fp32"


def _model(path: Path, nodes: list, inputs: list, outputs: list, weights: dict) -> Path:
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(
            value
            if isinstance(value, np.ndarray)
            else rng.standard_normal(value).astype(np.float32),
            name,
        )
        for name, value in weights.items()
    ]
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


def _nhwc_conv(path: Path) -> Path:
    """x[N, H, W, C] (every dim dynamic), normalized, transposed to NCHW, into a 3-channel Conv."""
    return _model(
        path,
        [
            helper.make_node("Sub", ["x", "mean"], ["centred"]),
            helper.make_node("Transpose", ["centred"], ["nchw"], perm=[0, 3, 1, 2]),
            helper.make_node("Conv", ["nchw", "W"], ["conv"], name="stem", pads=[1, 1, 1, 1]),
            helper.make_node("GlobalAveragePool", ["conv"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "H", "W", "C"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 1, 1])],
        {"mean": np.full((1,), 0.5, np.float32), "W": (4, 3, 3, 3)},
    )


def test_a_conv_weight_fixes_the_channels_of_an_all_dynamic_image(tmp_path: Path) -> None:
    model = _nhwc_conv(tmp_path / "nhwc.onnx")
    assert ingest(model).inputs[0].shape == ("N", "H", "W", 3)
    out = tmp_path / "nhwc.duh"
    result = CliRunner().invoke(app, ["build", str(model), "-t", ORT, "-o", str(out)])
    assert result.exit_code == 0, result.output
    with duh.load(out) as session:  # batch, height and width stay free
        x = np.random.default_rng(1).random((2, 20, 24, 3), np.float32)
        assert session.run({"x": x})["y"].shape == (2, 4, 1, 1)


def test_matmul_gemm_and_lstm_weights_fix_the_feature_width(tmp_path: Path) -> None:
    hidden = 5
    model = onnx.load(
        _model(
            tmp_path / "seq.onnx",
            [
                helper.make_node("MatMul", ["tokens", "proj"], ["projected"]),
                helper.make_node("Gemm", ["row", "fc"], ["scored"], transB=1),
                helper.make_node(
                    "LSTM", ["frames", "lstm_w", "lstm_r"], ["seq"], hidden_size=hidden
                ),
            ],
            [
                helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["N", "T", "F"]),
                helper.make_tensor_value_info("row", TensorProto.FLOAT, ["N", "F2"]),
                helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["T", "N", "F3"]),
            ],
            [
                helper.make_tensor_value_info("projected", TensorProto.FLOAT, ["N", "T", 8]),
                helper.make_tensor_value_info("scored", TensorProto.FLOAT, ["N", 6]),
                helper.make_tensor_value_info("seq", TensorProto.FLOAT, ["T", 1, "N", hidden]),
            ],
            {
                "proj": (16, 8),
                "fc": (6, 12),
                "lstm_w": (1, 4 * hidden, 7),
                "lstm_r": (1, 4 * hidden, hidden),
            },
        )
    )
    pinned = pin_weight_dims(model)
    assert {(p.name, p.axis, p.size) for p in pinned} == {
        ("tokens", 2, 16),
        ("row", 1, 12),
        ("frames", 2, 7),
    }
    shapes = {
        v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
        for v in model.graph.input
        if v.name in ("tokens", "row", "frames")
    }
    assert shapes == {"tokens": ["N", "T", 16], "row": ["N", 12], "frames": ["T", "N", 7]}
    assert {p.op for p in pinned} == {"MatMul", "Gemm", "LSTM"}
    assert "allows only 12" in next(p for p in pinned if p.op == "Gemm").describe()


def test_a_size_the_model_could_take_otherwise_stays_dynamic(tmp_path: Path) -> None:
    model = onnx.load(
        _model(
            tmp_path / "loose.onnx",
            [
                # [1, 3, 1, 1] broadcasts onto 1 channel as well as onto 3: not a view, nothing fixed
                helper.make_node("Mul", ["a", "scale"], ["scaled"]),
                helper.make_node("Conv", ["scaled", "W"], ["ya"]),
                # the input as the second operand of a MatMul: its rows are not the weight's width
                helper.make_node("MatMul", ["left", "b"], ["yb"]),
                # two weights that disagree: the model cannot run at all, its reference run says so
                helper.make_node("MatMul", ["c", "m4"], ["yc"]),
                helper.make_node("MatMul", ["c", "m5"], ["yd"]),
            ],
            [
                helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", "C", "H", "W"]),
                helper.make_tensor_value_info("b", TensorProto.FLOAT, ["K", "M"]),
                helper.make_tensor_value_info("c", TensorProto.FLOAT, ["N", "K2"]),
            ],
            [
                helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                for n in ("ya", "yb", "yc", "yd")
            ],
            {"scale": (1, 3, 1, 1), "W": (4, 3, 1, 1), "left": (2, 9), "m4": (4, 2), "m5": (5, 2)},
        )
    )
    assert pin_weight_dims(model) == []


def test_probing_dynamic_sizes_never_builds_gigabytes_of_input(tmp_path: Path) -> None:
    # Three dynamic sizes no weight fixes, and a constant that only 3 channels (or 1) fit: the
    # size probe fails at 32 and 256; at 2048 its input would be 2048**3 floats (32 GiB).
    model = _model(
        tmp_path / "probe.onnx",
        [helper.make_node("Add", ["x", "bias"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "C", "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        {"bias": (1, 3, 1, 1)},
    )
    result = CliRunner().invoke(app, ["build", str(model), "-t", ORT, "-o", str(tmp_path / "p")])
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), result.exception  # duh's error, no traceback
    assert "--shape" in result.output  # the error names the fix
    assert not (tmp_path / "p").exists()
