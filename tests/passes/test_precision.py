from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from duh.passes import create_pass
from tests.passes._models import FIXTURES, conv_bn_model, ctx, mlp_block_model, run_ort, run_ov


def _digits() -> tuple[onnx.ModelProto, np.ndarray]:
    data = np.load(FIXTURES / "digits_test.npz")
    return onnx.load(str(FIXTURES / "digits_cnn.onnx")), data["input"][:128]


def _float16_weights(model: onnx.ModelProto, dtype: int) -> int:
    return sum(1 for i in model.graph.initializer if i.data_type == dtype)


def test_fp16_keeps_float32_io_and_stays_close(tmp_path: Path) -> None:
    model, x = _digits()
    result = create_pass("fp16").run(model, ctx(tmp_path, precision="fp16"))
    out = result.model
    assert out.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert out.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert _float16_weights(out, TensorProto.FLOAT16) >= 4
    assert _float16_weights(out, TensorProto.FLOAT) == 0
    want, got = run_ort(model, {"input": x})[0], run_ort(out, {"input": x})[0]
    assert np.abs(got - want).max() <= 1e-2 * np.abs(want).max()
    assert np.mean(got.argmax(1) == want.argmax(1)) == 1.0
    assert out.ByteSize() < 0.6 * model.ByteSize()


def test_fp16_without_keep_io_types_takes_float16(tmp_path: Path) -> None:
    model, x = _digits()
    out = create_pass("fp16", {"keep_io_types": False}).run(model, ctx(tmp_path)).model
    assert out.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    got = run_ort(out, {"input": x.astype(np.float16)})[0]
    assert got.dtype == np.float16
    np.testing.assert_allclose(
        got.astype(np.float32), run_ort(model, {"input": x})[0], atol=0.1, rtol=0.02
    )


def test_block_list_keeps_ops_in_float32(tmp_path: Path) -> None:
    model = mlp_block_model()
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    # ReduceMean, Pow (and Softmax, ...) are blocked by default: the LayerNorm's statistics stay fp32.
    out = create_pass("fp16").run(model, ctx(tmp_path)).model
    types = {v.name: v.type.tensor_type.elem_type for v in out.graph.value_info}
    assert types["mean"] == TensorProto.FLOAT and types["var"] == TensorProto.FLOAT
    assert types["mm1"] == TensorProto.FLOAT16
    np.testing.assert_allclose(
        run_ort(out, {"x": x})[0], run_ort(model, {"x": x})[0], atol=2e-2, rtol=2e-2
    )
    # The block list is config: block MatMul too, and it stays fp32.
    out2 = create_pass("fp16", {"block_nodes": ("mm1",)}).run(model, ctx(tmp_path)).model
    types2 = {v.name: v.type.tensor_type.elem_type for v in out2.graph.value_info}
    assert types2["mm1"] == TensorProto.FLOAT


def test_fp16_clips_weights_beyond_its_range(tmp_path: Path) -> None:
    model = conv_bn_model()
    weight = next(i for i in model.graph.initializer if i.name == "fc_w")
    values = onnx.numpy_helper.to_array(weight).copy()
    values[0, 0] = 1e6
    weight.CopyFrom(onnx.numpy_helper.from_array(values, "fc_w"))
    result = create_pass("fp16").run(model, ctx(tmp_path))
    assert any("1 weight values clipped" in n for n in result.notes)


def test_bf16_on_openvino(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    model, x = _digits()
    result = create_pass("bf16").run(model, ctx(tmp_path, engine="openvino", precision="bf16"))
    out = result.model
    assert _float16_weights(out, TensorProto.BFLOAT16) >= 4
    assert any("opset 17 -> 22" in n for n in result.notes)
    want, got = run_ort(model, {"input": x})[0], run_ov(out, {"input": x}, tmp_path)[0]
    # bfloat16 keeps 8 bits of mantissa: about 2 significant digits.
    assert np.abs(got - want).max() <= 2e-2 * np.abs(want).max()
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.99
