"""Static INT8 leaves attention-mask arithmetic (-inf constants) in float; NNCF's mode works."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from duh.calibration import CalibrationSet
from duh.passes import create_pass
from tests.passes._models import ctx, make_model, run_ort

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SEQ, DIM = 8, 16


def _attention_block() -> onnx.ModelProto:
    """x[1,SEQ,DIM], mask[1,SEQ] (1 = token) -> one attention head with an additive -inf mask,
    written as PyTorch's scaled-dot-product export writes it (Where(mask, 0, -inf))."""
    rng = np.random.default_rng(0)
    weights = {n: rng.normal(0, 0.3, (DIM, DIM)).astype(np.float32) for n in ("wq", "wk", "wv")}
    inits = [numpy_helper.from_array(w, n) for n, w in weights.items()]
    inits += [
        numpy_helper.from_array(np.array(DIM**-0.5, np.float32), "scale"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array(-np.inf, np.float32), "minus_inf"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"], name="q_proj"),
        helper.make_node("MatMul", ["x", "wk"], ["k"], name="k_proj"),
        helper.make_node("MatMul", ["x", "wv"], ["v"], name="v_proj"),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1], name="k_t"),
        helper.make_node("MatMul", ["q", "kt"], ["qk"], name="scores"),
        helper.make_node("Mul", ["qk", "scale"], ["scaled"], name="scale_scores"),
        helper.make_node("Cast", ["mask"], ["mask_b"], to=TensorProto.BOOL, name="mask_bool"),
        helper.make_node("Unsqueeze", ["mask_b", "axis1"], ["mask_u"], name="mask_unsqueeze"),
        helper.make_node("Where", ["mask_u", "zero", "minus_inf"], ["bias"], name="mask_where"),
        helper.make_node("Add", ["scaled", "bias"], ["masked"], name="mask_add"),
        helper.make_node("Softmax", ["masked"], ["probs"], axis=-1, name="softmax"),
        helper.make_node("MatMul", ["probs", "v"], ["y"], name="context"),
    ]
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, SEQ, DIM]),
        helper.make_tensor_value_info("mask", TensorProto.INT64, [1, SEQ]),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, SEQ, DIM])]
    return make_model(nodes, inputs, outputs, inits)


def _feeds(count: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count):
        mask = np.ones((1, SEQ), np.int64)
        mask[0, int(rng.integers(3, SEQ)) :] = 0  # padding at the end, as tokenizers pad
        feeds.append({"x": rng.normal(0, 1, (1, SEQ, DIM)).astype(np.float32), "mask": mask})
    return feeds


def _calibration() -> CalibrationSet:
    return CalibrationSet(tuple(_feeds(32, 1)), (), "test feeds", "mask-exclusion-test")


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    x, y = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


def _mask_inputs_quantized(model: onnx.ModelProto) -> list[str]:
    """The mask's tensors (the Where's inputs and output, the Add's mask input) that pass
    through a QuantizeLinear or come out of a DequantizeLinear."""
    made = {o: n for n in model.graph.node for o in n.output}
    where = next(n for n in model.graph.node if n.name == "mask_where")
    add = next(n for n in model.graph.node if n.name == "mask_add")
    mask_tensors = [*where.input, add.input[1]]
    read_by_q = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    return [
        t
        for t in mask_tensors
        if t in read_by_q or (t in made and made[t].op_type == "DequantizeLinear")
    ]


@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_static_qdq_leaves_the_mask_add_float(tmp_path: Path, engine: str) -> None:
    model = _attention_block()
    c = ctx(tmp_path, engine=engine, precision="int8", calibration=_calibration())
    result = create_pass("quantize", {"mode": "static"}).run(model, c)
    out = result.model
    ops = [n.op_type for n in out.graph.node]
    assert ops.count("QuantizeLinear") >= 3, "the projections are still quantized"
    assert _mask_inputs_quantized(out) == []
    for feed in _feeds(8, 2):
        expected, got = run_ort(model, feed)[0], run_ort(out, feed)[0]
        assert np.all(np.isfinite(got))
        assert _cosine(expected, got) > 0.99


@pytest.mark.skipif(importlib.util.find_spec("nncf") is None, reason="nncf not installed")
def test_nncf_mode_quantizes_the_block_and_stays_close(tmp_path: Path) -> None:
    model = _attention_block()
    c = ctx(tmp_path, engine="openvino", precision="int8", calibration=_calibration())
    result = create_pass("quantize", {"mode": "nncf"}).run(model, c)
    assert result.changed and any("NNCF" in n for n in result.notes)
    assert sum(n.op_type == "QuantizeLinear" for n in result.model.graph.node) >= 2
    for feed in _feeds(8, 2):
        expected, got = run_ort(model, feed)[0], run_ort(result.model, feed)[0]
        assert _cosine(expected, got) > 0.99
