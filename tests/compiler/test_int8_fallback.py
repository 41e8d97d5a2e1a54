"""The INT8 fallback: a static INT8 build that fails its check is retried with ops in float."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from duh.compiler import build
from duh.compiler.verify import Tolerance
from duh.errors import DuhError
from duh.passes import PassContext, create_pass
from duh.passes.quantize import float_region, rank_sensitivity

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _saved(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


def _outlier_model(path: Path, tail: bool = True) -> Path:
    """x[1,8] -> MatMul -> Add (one channel offset by 1e4) -> Relu -> MatMul (that channel
    weighted 0) -> MatMul -> y[1,4]: a per-tensor int8 step over the outlier's range wipes out
    every other channel, and the output depends on those only. The last MatMul reads well-ranged
    values: it stays quantized when the ops around the outlier are kept in float."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(8, 16)).astype(np.float32)
    b1 = np.zeros(16, np.float32)
    b1[0] = 1e4
    w2 = rng.normal(size=(16, 4)).astype(np.float32)
    w2[0] = 0.0
    w3 = rng.normal(size=(4, 4)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
            helper.make_node("Add", ["h", "b1"], ["hb"], name="bias1"),
            helper.make_node("Relu", ["hb"], ["r"], name="relu1"),
            helper.make_node("MatMul", ["r", "w2"], ["h2" if tail else "y"], name="fc2"),
            *([helper.make_node("MatMul", ["h2", "w3"], ["y"], name="fc3")] if tail else []),
        ],
        "outlier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"),
         numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(w3, "w3")],
    )  # fmt: skip
    return _saved(graph, path)


def _samples(path: Path, count: int, seed: int) -> Path:
    x = np.random.default_rng(seed).normal(size=(count, 1, 8)).astype(np.float32)
    np.savez(path, x=x)
    return path


def _log_mel_model(path: Path) -> Path:
    """x[1,1,64] -> MatMul (a cosine transform) -> Mul (power) -> MatMul (a 16-bin filterbank)
    -> Clip(1e-10) -> Log -> y[1,1,16]: an audio front end. A per-tensor int8 step over the
    power spectrum's peaks zeroes its floor, and the Log turns that into the whole error; where
    the filterbank sits, the error it adds is small next to the transform's."""
    n, bins = 64, 16
    t = np.arange(n)
    transform = np.cos(2 * np.pi * np.outer(t, t) / n).astype(np.float32)
    bank = np.zeros((n, bins), np.float32)
    for b in range(bins):
        bank[4 * b : 4 * b + 4, b] = 0.25
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "transform"], ["h"], name="frame"),
            helper.make_node("Mul", ["h", "h"], ["power"], name="power"),
            helper.make_node("MatMul", ["power", "bank"], ["m"], name="filterbank"),
            helper.make_node("Clip", ["m", "floor"], ["c"], name="floor"),
            helper.make_node("Log", ["c"], ["y"], name="log"),
        ],
        "log_mel",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, bins])],
        [numpy_helper.from_array(transform, "transform"), numpy_helper.from_array(bank, "bank"),
         numpy_helper.from_array(np.array(1e-10, np.float32), "floor")],
    )  # fmt: skip
    return _saved(graph, path)


def _tones(path: Path, count: int, seed: int) -> Path:
    """Frames of three tones and a little noise: a spectrum of a few peaks over a low floor."""
    rng = np.random.default_rng(seed)
    t = np.arange(64)
    frames = [
        sum(np.cos(2 * np.pi * rng.integers(1, 32) * t / 64 + rng.uniform(0, 6)) for _ in range(3))
        + rng.normal(scale=0.2, size=64)
        for _ in range(count)
    ]
    np.savez(path, x=np.stack(frames)[:, None, None].astype(np.float32))
    return path


@pytest.mark.parametrize("target", ["onnxruntime:cpu-int8", "openvino:cpu-int8"])
def test_the_fallback_finds_the_op_whose_error_a_later_op_amplifies(
    target: str, tmp_path: Path
) -> None:
    """The proxy blames the transform; leaving each top op out of INT8 and measuring the outputs
    finds the filterbank, which alone in float passes while the transform stays INT8."""
    result = build(
        _log_mel_model(tmp_path / "log_mel.onnx"), target, tmp_path / "out.duh",
        calib=_tones(tmp_path / "calib.npz", 32, 1), check_data=_tones(tmp_path / "check.npz", 8, 2),
    )  # fmt: skip
    assert result.manifest is not None
    quantize = next(p for p in result.manifest.passes if p["name"] == "quantize")
    notes = " | ".join(quantize["notes"])
    kept = notes.split("kept in float: ")[1].split(" (")[0]
    assert kept == "filterbank", notes
    assert "filterbank (MatMul, in float raises the cosine +0." in notes, notes
    assert quantize["nodes_after"] > quantize["nodes_before"]  # the transform is still INT8
    assert min(o["cosine"] for o in result.manifest.checks["outputs"]) >= 0.98
    rounds = result.manifest.selection["candidates"][0]["int8_fallback"]
    if target.startswith("openvino") and importlib.util.find_spec("nncf") is not None:
        # OpenVINO's own quantizer is tried first; here its graph fails as it is, and an op
        # round finds the filterbank: NNCF's own (on VNNI CPUs) or the static setting's
        assert rounds[0].startswith("NNCF (bias-corrected), all ops, no op in float"), rounds
        assert "1 op in float around the most sensitive filterbank" in rounds[-1], rounds


def test_the_fallback_rescues_a_model_plain_int8_ruins_and_records_the_ops_in_float(
    tmp_path: Path,
) -> None:
    model = _outlier_model(tmp_path / "outlier.onnx")
    calib = _samples(tmp_path / "calib.npz", 32, 1)
    check = _samples(tmp_path / "check.npz", 8, 2)
    result = build(
        model, "onnxruntime:cpu-int8", tmp_path / "out.duh", calib=calib, check_data=check
    )
    assert result.manifest is not None
    passes = {p["name"]: p for p in result.manifest.passes}
    notes = " | ".join(passes["quantize"]["notes"])
    assert "plain static INT8 failed verification" in notes, notes
    assert "kept in float:" in notes and "fc2" in notes, notes
    assert "fc3" not in notes.split("kept in float:")[1].split("(")[0], notes  # still INT8
    verification = result.manifest.checks
    assert verification["passed"] is True
    assert min(o["cosine"] for o in verification["outputs"]) >= 0.98
    chosen = result.manifest.selection["candidates"][0]
    assert chosen["int8_fallback"], chosen


def test_sensitivity_blames_the_op_that_reads_the_outlier_and_keeps_its_feeders_float(
    tmp_path: Path,
) -> None:
    from duh.calibration import load_calibration
    from duh.compiler.ingest import ingest

    model_path = _outlier_model(tmp_path / "outlier.onnx")
    source = ingest(model_path, {})
    calib = load_calibration(
        _samples(tmp_path / "calib.npz", 16, 1), source.inputs, samples=16, holdout=0, shapes={}
    )
    ctx = PassContext("onnxruntime", "cpu", "int8", tmp_path, calib)
    qdq = create_pass("quantize", {}).run(source.model, ctx).model
    ranked = rank_sensitivity(source.model, qdq, calib.feeds[:4])
    assert ranked[0].node == "fc2", ranked
    assert ranked[0].added > 0.5
    assert {"fc2", "fc1"} <= set(float_region(qdq, ["fc2"]))


def test_a_build_no_round_rescues_fails_with_the_best_cosine_reached(tmp_path: Path) -> None:
    model = _outlier_model(tmp_path / "outlier.onnx")
    calib = _samples(tmp_path / "calib.npz", 32, 1)
    # A cosine above 1 cannot be met: every round fails, and the error says how close it came.
    impossible = Tolerance(atol=1e9, rtol=1e9, min_cosine=1.01, elementwise=False)
    with pytest.raises(DuhError, match=r"INT8 fallback: \d+ rebuild\(s\).*best cosine (1\.0000|0\.99\d\d)"):
        build(
            model,
            "onnxruntime:cpu-int8",
            tmp_path / "out.duh",
            calib=calib,
            check_data=_samples(tmp_path / "check.npz", 8, 2),
            tolerance=impossible,
        )


def test_a_rescue_that_would_keep_every_op_in_float_is_refused(tmp_path: Path) -> None:
    """Without the last MatMul, only all-float passes: that is fp32 under an INT8 name."""
    model = _outlier_model(tmp_path / "outlier.onnx", tail=False)
    with pytest.raises(DuhError, match="would keep every quantized op in float"):
        build(
            model,
            "onnxruntime:cpu-int8",
            tmp_path / "out.duh",
            calib=_samples(tmp_path / "calib.npz", 32, 1),
            check_data=_samples(tmp_path / "check.npz", 8, 2),
        )
    assert not (tmp_path / "out.duh").exists()
