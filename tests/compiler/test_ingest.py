from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from duh.compiler.ingest import ingest, normalize_for_engine
from duh.errors import ModelError


def _relu_model(opset: int = 17, domain: str = "", op: str = "Relu") -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node(op, ["x"], ["y"], domain=domain)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
    )
    imports = [helper.make_opsetid("", opset)]
    if domain:
        imports.append(helper.make_opsetid(domain, 1))
    return helper.make_model(graph, opset_imports=imports)


def test_signature_keeps_symbolic_dims(digits_model: Path) -> None:
    source = ingest(digits_model)
    assert [(s.name, s.dtype, s.shape) for s in source.inputs] == [
        ("input", "float32", ("batch", 1, 8, 8))
    ]
    assert source.outputs[0].shape == ("batch", 10)
    assert len(source.sha256) == 64


def test_shape_override_fixes_dims(digits_model: Path) -> None:
    source = ingest(digits_model, {"input": (4, 1, 8, 8)})
    assert source.inputs[0].shape == (4, 1, 8, 8)
    with pytest.raises(ModelError, match="names input 'nope'"):
        ingest(digits_model, {"nope": (1,)})
    with pytest.raises(ModelError, match="has rank 2"):
        ingest(digits_model, {"input": (1, 64)})


def test_a_truncated_model_is_a_clear_error(digits_model: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(digits_model.read_bytes()[:5000])
    with pytest.raises(
        ModelError,
        match="broken.onnx .*truncated, corrupt or of another format|fails the ONNX checker",
    ):
        ingest(broken)


def test_a_file_that_is_not_onnx(tmp_path: Path) -> None:
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n" * 10)
    with pytest.raises(ModelError, match="notes.onnx"):
        ingest(text)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        ingest(tmp_path / "nope.onnx")
    with pytest.raises(ModelError, match="is a directory"):
        ingest(tmp_path)


def test_external_data_loads_and_its_absence_is_named(fixtures_dir: Path, tmp_path: Path) -> None:
    source = ingest(fixtures_dir / "mlp_external.onnx")
    assert source.external_data == ("mlp_external.onnx.data",)
    weights = {i.name: onnx.numpy_helper.to_array(i) for i in source.model.graph.initializer}
    assert weights["w1"].shape == (64, 256)
    lonely = tmp_path / "mlp_external.onnx"
    shutil.copy(fixtures_dir / "mlp_external.onnx", lonely)
    with pytest.raises(ModelError, match="external file 'mlp_external.onnx.data', which is not in"):
        ingest(lonely)


def test_custom_ops_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "custom.onnx"
    onnx.save(_relu_model(domain="com.example", op="MagicRelu"), path)
    with pytest.raises(
        ModelError, match="custom operators no duh engine runs: com.example::MagicRelu"
    ):
        ingest(path)


def test_checker_failures_are_reported(tmp_path: Path) -> None:
    model = _relu_model()
    model.graph.node[0].input[0] = "undefined_tensor"
    path = tmp_path / "bad.onnx"
    onnx.save(model, path)
    with pytest.raises(ModelError, match="bad.onnx fails the ONNX checker"):
        ingest(path)


def test_an_old_opset_is_converted(tmp_path: Path) -> None:
    path = tmp_path / "old.onnx"
    model = _relu_model(opset=6)
    model.ir_version = 3
    onnx.save(model, path)
    source = ingest(path)
    assert source.opset == 6
    opsets = {e.domain: e.version for e in source.model.opset_import}
    assert opsets[""] == 13


def test_normalize_caps_ir_and_opset() -> None:
    model = _relu_model(opset=27)
    model.ir_version = 14
    fixed = normalize_for_engine(model, "onnxruntime", 26, 13)
    assert fixed.ir_version <= 13
    assert {e.domain: e.version for e in fixed.opset_import}[""] == 26
    import onnxruntime as ort

    session = ort.InferenceSession(fixed.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.array([[-1, 0, 2]], np.float32)
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], [[0, 0, 2]])


@pytest.mark.parametrize("opset", [23, 25])
def test_an_opset_the_engines_ir_cannot_hold_is_converted_down(opset: int, tmp_path: Path) -> None:
    # OpenVINO reads ONNX IR up to 10 (opset 22): a newer export is converted, not refused.
    model = _relu_model(opset=opset)
    model.ir_version = 13
    fixed = normalize_for_engine(model, "openvino", 26, 10)
    assert fixed.ir_version == 10
    assert {e.domain: e.version for e in fixed.opset_import}[""] == 22
    path = tmp_path / f"op{opset}.onnx"
    onnx.save(model, path)
    from duh.compiler import build

    result = build(path, "openvino:cpu-fp32", tmp_path / "op.duh")
    assert result.manifest is not None and result.manifest.checks["passed"]


def test_an_opset_newer_than_onnx_knows(tmp_path: Path) -> None:
    path = tmp_path / "future.onnx"
    model = _relu_model(opset=onnx.defs.onnx_opset_version() + 2)
    onnx.save(model, path)
    with pytest.raises(
        ModelError, match=r"future.onnx uses opset \d+, newer than the \d+ this onnx"
    ):
        ingest(path)


def _shapeless(path: Path, shapeless_input: bool) -> Path:
    """x[n, 8] @ W[8, 4], its output declared with no shape at all (as graphsurgeon writes)."""
    weight = onnx.numpy_helper.from_array(np.ones((8, 4), np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, None if shapeless_input else ["n", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y], [weight]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.save(model, str(path))
    return path


def test_a_shapeless_output_takes_its_inferred_shape(tmp_path: Path) -> None:
    source = ingest(_shapeless(tmp_path / "m.onnx", shapeless_input=False))
    assert [o.shape for o in source.outputs] == [("n", 4)]


def test_a_shapeless_input_asks_for_shape_and_takes_it(tmp_path: Path) -> None:
    model = _shapeless(tmp_path / "m.onnx", shapeless_input=True)
    with pytest.raises(ModelError, match=r"input 'x' declares no shape.*--shape x="):
        ingest(model)
    source = ingest(model, {"x": (2, 8)})
    assert source.inputs[0].shape == (2, 8)
    assert source.outputs[0].shape == (2, 4)


def test_an_output_declared_a_scalar_takes_its_inferred_rank(tmp_path: Path) -> None:
    # paddle2onnx declares outputs it knows nothing of with no dims: a scalar, read literally
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("ReduceSum", ["x"], ["s"],
                                                                   keepdims=0)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, []),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, [])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.save(model, str(tmp_path / "m.onnx"))
    source = ingest(tmp_path / "m.onnx")
    assert [o.shape for o in source.outputs] == [("n", 3), ()]  # a true scalar stays one
