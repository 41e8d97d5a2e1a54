"""OpenVINO's accuracy-aware bf16: ops marked ``precise`` stay f32 under the bf16 hint, the
search keeps the ops bf16 hurts in f32, and the build records them; plus OpenVINO's refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from duh.compiler import build as build_model
from duh.host import host_info
from duh.targets.openvino._bf16 import keep_f32_for_accuracy, mark_precise

ov = pytest.importorskip("openvino")
pytestmark = pytest.mark.skipif(
    not (host_info().has("avx512_bf16") or host_info().has("amx_bf16")),
    reason="the CPU has no bf16: OpenVINO runs the bf16 hint as f32 here",
)

WIDTH = 256


def _cancelling_model(path: Path) -> Path:
    """x[1,512] -> MatMul (+1/-1 columns: sums of near-equal values cancel) -> Relu -> MatMul.

    bf16 keeps 8 bits of mantissa: inputs near 1.0 lose their small parts, so the first
    product (a difference of sums of near-equal numbers) is far off in bf16 and exact in f32.
    """
    rng = np.random.default_rng(0)
    w1 = np.concatenate([np.ones((WIDTH, 8)), -np.ones((WIDTH, 8))]).astype(np.float32)
    w2 = rng.standard_normal((8, 4)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"], name="first"),
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            helper.make_node("MatMul", ["r", "w2"], ["y"], name="second"),
        ],
        "cancel",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2 * WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _feeds(n: int = 4) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    out = []
    for _ in range(n):
        x = 1.0 + rng.uniform(0, 0.004, (1, 2 * WIDTH))
        x[:, :WIDTH] += 0.002  # the first half a little larger: the difference is what counts
        out.append({"x": x.astype(np.float32)})
    return out


def _run(model: object, hint: str, feeds: list[dict[str, np.ndarray]], tmp: Path) -> np.ndarray:
    xml = tmp / f"m-{hint}.xml"
    ov.save_model(model, str(xml), compress_to_fp16=False)
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": hint})
    return np.stack([np.array(compiled(f)[0]) for f in feeds])


def test_ops_marked_precise_stay_f32_under_the_bf16_hint(tmp_path: Path) -> None:
    path = _cancelling_model(tmp_path / "cancel.onnx")
    feeds = _feeds()
    ref = _run(ov.convert_model(str(path)), "f32", feeds, tmp_path)
    plain = _run(ov.convert_model(str(path)), "bf16", feeds, tmp_path)
    marked_model = ov.convert_model(str(path))
    assert mark_precise(marked_model, ["first"]) == 1
    marked = _run(marked_model, "bf16", feeds, tmp_path)
    scale = float(np.abs(ref).max())
    assert float(np.abs(plain - ref).max()) > 0.1 * scale  # bf16 alone is far off
    assert float(np.abs(marked - ref).max()) < 0.02 * scale  # the cancelling product in f32


def test_the_search_keeps_the_sensitive_first_op_in_f32(tmp_path: Path) -> None:
    path = _cancelling_model(tmp_path / "cancel.onnx")
    model = ov.convert_model(str(path))
    plan = keep_f32_for_accuracy(ov, model, _feeds(), tmp_path)
    assert plan.passed, plan
    assert plan.kept_f32 and plan.kept_f32[0] == "first"
    assert "second" not in plan.kept_f32  # not everything: bf16 still runs the last product
    assert list(tmp_path.glob("bf16-search*")) == []


def test_bf16_build_records_the_ops_kept_in_f32_and_matches_the_source(tmp_path: Path) -> None:
    path = _cancelling_model(tmp_path / "cancel.onnx")
    data = tmp_path / "check.npz"
    np.savez(data, x=np.concatenate([f["x"] for f in _feeds()]))
    result = build_model(path, "openvino:cpu-bf16", tmp_path / "cancel.duh", check_data=data)
    assert result.output is not None
    manifest = json.loads((result.output / "manifest.json").read_text())
    assert manifest["engine_config"]["kept_f32"][0] == "first"
    notes = manifest["build"]["compile_notes"]
    assert len(notes) == 1 and "kept the first" in notes[0] and "f32" in notes[0]


def test_a_model_of_ops_openvino_lacks_runs_on_onnxruntime_and_says_so(tmp_path: Path) -> None:
    # LabelEncoder: ai.onnx.ml, which OpenVINO lacks and lower-ml does not rewrite (tree
    # ensembles and linear models it does: they build for OpenVINO)
    node = helper.make_node(
        "LabelEncoder", ["x"], ["y"], domain="ai.onnx.ml",
        keys_int64s=[1, 2, 3], values_int64s=[10, 20, 30], default_int64=-1,
    )  # fmt: skip
    graph = helper.make_graph(
        [node],
        "encoder",
        [helper.make_tensor_value_info("x", TensorProto.INT64, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [1, 4])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    )
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "forest.onnx"))
    result = build_model(tmp_path / "forest.onnx", "openvino:cpu-fp32", tmp_path / "forest.duh")
    assert result.manifest is not None and result.manifest.checks["passed"]
    [stage] = result.manifest.engine_config["stages"]
    assert stage["engine"] == "onnxruntime"
    notes = result.manifest.build["compile_notes"]
    assert "openvino runs none of the model's 1 ops (LabelEncoder)" in notes[0], notes


def test_a_float64_tree_ensemble_keeps_its_input_cast_in_f32(tmp_path: Path) -> None:
    # LightGBM's converter takes float64 features and casts them to f32 for the trees: under
    # the bf16 hint that Convert yields bf16, the features are rounded before the split
    # comparisons, and splits flip (atspm-detector's model: max abs 0.24 on outputs of 2.3).
    pytest.importorskip("skl2onnx")
    from skl2onnx import to_onnx
    from sklearn.ensemble import GradientBoostingRegressor

    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 16))
    y = x[:, 0] * 2 + np.sin(x[:, 1] * 3) + x[:, 2] * x[:, 3]
    x += 100.0  # features of magnitude 100 (counts, times): bf16's spacing there is 0.5
    trees = GradientBoostingRegressor(n_estimators=60, max_depth=4, random_state=0).fit(x, y)
    model = to_onnx(trees, x[:1].astype(np.float32), target_opset={"": 17, "ai.onnx.ml": 3})
    features = model.graph.input[0]
    features.type.tensor_type.elem_type = TensorProto.DOUBLE
    for node in model.graph.node:
        node.input[:] = ["features_f32" if n == features.name else n for n in node.input]
    model.graph.node.insert(
        0, helper.make_node("Cast", [features.name], ["features_f32"], to=TensorProto.FLOAT)
    )
    onnx.save(model, str(tmp_path / "trees.onnx"))
    np.savez(tmp_path / "check.npz", **{features.name: x[:16]})
    result = build_model(tmp_path / "trees.onnx", "cpu-bf16", tmp_path / "trees.duh",
                         check_data=tmp_path / "check.npz")  # fmt: skip
    assert result.manifest is not None and result.manifest.checks["passed"]
    assert result.manifest.engine_config["kept_f32"]
