"""Failure classes the zoo found, each on a small model that shows it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from typer.testing import CliRunner

from duh.cli import app


def _zipmap_classifier(path: Path) -> Path:
    """A classifier whose probabilities leave through ZipMap, as onnxmltools/skl2onnx write it."""
    graph = helper.make_graph(
        [
            helper.make_node(
                "LinearClassifier",
                ["X"],
                ["label", "scores"],
                domain="ai.onnx.ml",
                classlabels_ints=[0, 1],
                coefficients=[1.0, -1.0, -1.0, 1.0],
                intercepts=[0.0, 0.0],
                post_transform="SOFTMAX",
            ),
            helper.make_node(
                "ZipMap",
                ["scores"],
                ["probabilities"],
                domain="ai.onnx.ml",
                classlabels_int64s=[0, 1],
            ),
        ],
        "zipmap",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 2])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
            helper.make_value_info(
                "probabilities",
                helper.make_sequence_type_proto(
                    helper.make_map_type_proto(
                        TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, [])
                    )
                ),
            ),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    )
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def test_a_non_tensor_output_is_refused_in_one_line(tmp_path: Path) -> None:
    model = _zipmap_classifier(tmp_path / "zipmap.onnx")
    (probabilities,) = ort.InferenceSession(str(model)).run(
        ["probabilities"], {"X": np.ones((1, 2), np.float32)}
    )
    assert isinstance(probabilities, list)  # the source runs: the refusal is duh's, not ORT's
    out = tmp_path / "zipmap.duh"
    result = CliRunner().invoke(app, ["build", str(model), "-t", "cpu", "-o", str(out)])
    assert result.exit_code == 3, result.output
    assert not isinstance(result.exception, KeyError)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert "'probabilities' is a sequence<map<int64, tensor(float)>>" in lines[0]
    assert "zipmap" in lines[0].lower()
    assert not out.exists()
