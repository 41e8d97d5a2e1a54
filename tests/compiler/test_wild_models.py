"""Classes of failure seen on models from the wild, each on a small model that shows it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

import duh
from duh.cli import app
from duh.compiler import build, ingest
from duh.compiler._feeds import check_feeds, input_ranges, quantized_ops
from duh.compiler.verify import Tolerance, synthetic_feeds
from duh.errors import ConfigError, ModelError, TargetError
from duh.runtime import TensorSpec, read_manifest, synthetic_feed
from tests._host import needs_bf16
from tests.compiler import _wild

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
ORT = "onnxruntime:cpu-fp32"


# -- class 1: dimensions declared as -1 -------------------------------------------------------


def test_minus_one_and_question_mark_dims_are_dynamic(tmp_path: Path) -> None:
    model = _wild.minus_one_batch(tmp_path / "paddle.onnx")
    assert ingest(model).inputs[0].shape == (None, 3, None, None)
    fixed = ingest(model, {"x": (1, 3, 48, 192)})
    assert fixed.inputs[0].shape == (1, 3, 48, 192)


def test_a_minus_one_batch_builds_with_and_without_shape(tmp_path: Path) -> None:
    model = _wild.minus_one_batch(tmp_path / "paddle.onnx")
    runner = CliRunner()
    free, pinned = tmp_path / "free.duh", tmp_path / "pinned.duh"
    first = runner.invoke(app, ["build", str(model), "-t", ORT, "-o", str(free)])
    assert first.exit_code == 0, first.output
    second = runner.invoke(
        app, ["build", str(model), "-t", ORT, "-o", str(pinned), "--shape", "x=1x3x48x192"]
    )
    assert second.exit_code == 0, second.output
    signature = json.loads((free / "manifest.json").read_text())["signature"]["inputs"]
    assert signature[0]["shape"] == [None, 3, None, None]
    assert read_manifest(pinned).inputs[0].shape == (1, 3, 48, 192)
    with duh.load(free) as session:
        x = np.random.default_rng(0).standard_normal((3, 3, 40, 56)).astype(np.float32)
        assert session.run({"x": x})["y"].shape == (3, 4)


def test_no_synthetic_input_has_a_negative_size() -> None:
    spec = TensorSpec("x", "float32", (-1, 3, None))
    [feed] = synthetic_feeds([spec], 1)
    assert feed["x"].shape == (1, 3, 32)
    with pytest.raises(ConfigError, match=r"no usable size .*--shape x=1x3x1"):
        synthetic_feed([spec], {"x": (-1, 3, 4)}, np.random.default_rng(0))


# -- class 3: one failing candidate does not sink a short-name build -----------------------


def _det_model(path: Path) -> Path:
    """Det, which ONNX Runtime runs and OpenVINO has no conversion rule for, inside an If
    branch (OpenVINO's builds place main-graph ops on ONNX Runtime, not ops of a branch)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])
    out = [helper.make_tensor_value_info("d", TensorProto.FLOAT, ["batch"])]
    then = helper.make_graph([helper.make_node("Det", ["x"], ["d"])], "then", [], out)
    other = helper.make_graph(
        [helper.make_node("Det", ["x"], ["s"]), helper.make_node("Neg", ["s"], ["d"])],
        "else", [], out,
    )  # fmt: skip
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
        helper.make_node("Greater", ["m", "zero"], ["c"]),
        helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other),
    ]
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [-1e30])
    return _wild.save(path, nodes, [x], [y], initializers=[zero])


def test_a_failing_engine_leaves_the_others_to_build(tmp_path: Path) -> None:
    model = _det_model(tmp_path / "det.onnx")
    result = build(model, "cpu", tmp_path / "det.duh")
    assert result.chosen is not None and result.chosen.engine == "onnxruntime"
    errors = {c.spec.engine: c.error for c in result.candidates}
    assert errors["onnxruntime"] is None
    assert errors["openvino"] is not None and "Det" in errors["openvino"]
    selection = read_manifest(tmp_path / "det.duh").selection
    assert "1 of 2 failed" in selection["method"]
    assert [c["error"] is not None for c in selection["candidates"]] == [False, True]
    report = CliRunner().invoke(app, ["build", str(model), "-o", str(tmp_path / "cli.duh")])
    assert report.exit_code == 0 and "Det" in report.output
    with pytest.raises(TargetError, match="openvino cannot convert the model"):
        build(model, "openvino:cpu-fp32", tmp_path / "ov.duh")


def test_the_build_fails_when_no_candidate_is_left_naming_each(tmp_path: Path) -> None:
    model = _det_model(tmp_path / "det.onnx")
    impossible = Tolerance(atol=0.0, rtol=0.0, min_cosine=1.5)
    with pytest.raises(TargetError) as caught:
        build(model, "cpu", tmp_path / "none.duh", tolerance=impossible)
    text = str(caught.value)
    assert "onnxruntime:cpu-fp32: " in text and "cosine" in text
    assert "openvino:cpu-fp32: " in text and "Det" in text
    assert not (tmp_path / "none.duh").exists()


# -- class 4: inputs that carry meaning --------------------------------------------------------


def test_synthetic_ids_stay_inside_the_gather_table_and_masks_are_0_or_1(tmp_path: Path) -> None:
    model = _wild.token_model(tmp_path / "tokens.onnx", vocab=3)
    source = ingest(model)
    ranges = input_ranges(source.model, source.inputs)
    assert (ranges["ids"].low, ranges["ids"].high) == (0, 3)
    assert (ranges["keep"].low, ranges["keep"].high) == (0, 2)
    feeds = synthetic_feeds(source.inputs, 4, ranges=ranges)
    ids = np.concatenate([f["ids"].ravel() for f in feeds])
    keep = np.concatenate([f["keep"].ravel() for f in feeds])
    assert ids.min() >= 0 and ids.max() <= 2 and set(keep.tolist()) == {0, 1}
    # Ids of 0..9 (the generic default) would run past the table: the build proves they do not.
    result = build(model, ORT, tmp_path / "tokens.duh")
    assert result.manifest is not None and result.manifest.checks["passed"] is True


def test_indices_into_a_dynamic_sized_table_stay_in_range(tmp_path: Path) -> None:
    # edge_index reaches Gather and ScatterElements through a Gather on itself: the rows it
    # indexes are num_nodes, a dynamic dimension, so 0 is the one index that always fits.
    model = _wild.graph_net_model(tmp_path / "gnn.onnx")
    source = ingest(model)
    ranges = input_ranges(source.model, source.inputs)
    assert (ranges["edge_index"].low, ranges["edge_index"].high) == (0, 1)
    assert "ScatterElements" in ranges["edge_index"].reason
    result = build(model, ORT, tmp_path / "gnn.duh")
    assert result.manifest is not None and result.manifest.checks["passed"] is True


def test_ids_held_as_floats_get_whole_numbers(tmp_path: Path) -> None:
    model = _wild.float_ids_model(tmp_path / "keras_ids.onnx")
    source = ingest(model)
    ranges = input_ranges(source.model, source.inputs)
    assert ranges["ids"].integral and (ranges["ids"].low, ranges["ids"].high) == (0, 10)
    [feed] = synthetic_feeds(source.inputs, 1, ranges=ranges)
    assert feed["ids"].dtype == np.float32 and np.array_equal(feed["ids"], np.round(feed["ids"]))
    assert feed["ids"].min() >= 0 and feed["ids"].max() <= 9


def test_dynamic_lengths_grow_until_the_model_runs(tmp_path: Path) -> None:
    model = _wild.reflect_pad_model(tmp_path / "pad.onnx")
    result = build(model, ORT, tmp_path / "pad.duh")
    assert result.manifest is not None and result.manifest.checks["passed"] is True
    # a length given with --shape is the user's: kept, and the reference's error says why
    with pytest.raises(ModelError, match="synthetic inputs"):
        build(model, ORT, tmp_path / "short.duh", shapes={"audio": (1, 40)})


def test_a_scalar_compared_with_a_constant_takes_that_constant(tmp_path: Path) -> None:
    model = _wild.sample_rate_model(tmp_path / "vad.onnx")
    source = ingest(model)
    assert [s.shape for s in source.inputs] == [(1, "n"), ()]
    [feed] = synthetic_feeds(source.inputs, 1, ranges=input_ranges(source.model, source.inputs))
    assert feed["sr"].shape == () and int(feed["sr"]) == 16000
    # Any other rate takes the branch that cannot run: the build verifies on 16000.
    result = build(model, ORT, tmp_path / "vad.duh")
    assert result.manifest is not None and result.manifest.checks["passed"] is True


def test_a_reference_failing_on_synthetic_inputs_asks_for_check_data(tmp_path: Path) -> None:
    model = _wild.shifted_index_model(tmp_path / "shifted.onnx")
    with pytest.raises(ModelError, match=r"synthetic inputs .*--check-data FILE"):
        build(model, ORT, tmp_path / "a.duh")
    data = tmp_path / "idx.npz"
    np.savez(data, idx=np.random.default_rng(0).integers(0, 3, (5, 1, 4)))
    result = build(model, ORT, tmp_path / "b.duh", check_data=data)
    assert result.manifest is not None
    checks = result.manifest.checks
    assert checks["passed"] is True and "idx.npz" in checks["input_source"]


@pytest.mark.parametrize(
    "target", ["openvino:cpu-fp32", pytest.param("openvino:cpu-bf16", marks=needs_bf16)]
)
def test_check_data_verifies_on_real_inputs(tmp_path: Path, target: str) -> None:
    result = build(
        FIXTURES / "digits_cnn.onnx",
        target,
        tmp_path / "d.duh",
        check_data=FIXTURES / "digits_test.npz",
        check_samples=4,
    )
    assert result.manifest is not None
    checks = result.manifest.checks
    assert checks["passed"] is True and checks["samples"] == 4
    assert checks["input_source"].startswith("4 samples of digits_test.npz")


def test_check_data_refuses_synthetic_and_data_that_does_not_fit(tmp_path: Path) -> None:
    model = FIXTURES / "digits_cnn.onnx"
    with pytest.raises(ConfigError, match="--check-data needs real samples"):
        build(model, ORT, tmp_path / "a.duh", check_data="synthetic")
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, pixels=np.zeros((3, 1, 8, 8), np.float32), other=np.zeros(3))
    with pytest.raises(duh.DuhError, match=r"check data|input"):
        build(model, ORT, tmp_path / "b.duh", check_data=wrong)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wrong.npz"]


# -- class 5: an already-quantized source is checked by INT8's criteria -------------------


def test_a_quantized_source_is_verified_by_int8_criteria(tmp_path: Path) -> None:
    model = _wild.quantized_model(tmp_path / "qdq.onnx")
    assert quantized_ops(onnx.load(str(model))) == ("DequantizeLinear", "QuantizeLinear")
    result = build(model, ORT, tmp_path / "q.duh")
    assert result.manifest is not None
    checks = result.manifest.checks
    assert checks["precision"] == "fp32" and checks["passed"] is True
    assert checks["tolerance"]["min_top1"] == 0.95 and checks["tolerance"]["elementwise"] is False
    assert "already quantized (DequantizeLinear, QuantizeLinear)" in checks["criteria"]
    assert any("already quantized" in w for w in result.warnings)
    assert result.manifest.source["quantized"] == ["DequantizeLinear", "QuantizeLinear"]


def test_int8_criteria_hold_label_outputs_to_agreement_not_equality() -> None:
    from duh.compiler.verify import _check_output, tolerance_for

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 40, (4, 50))
    flipped = labels.copy()
    flipped[0, :6] = (flipped[0, :6] + 1) % 40  # 6 of 200 labels flip: 0.97 agree
    int8, fp32 = tolerance_for("int8"), tolerance_for("fp32")
    ok = _check_output("cls", list(labels), list(flipped), int8)
    assert ok.passed and ok.top1 == pytest.approx(0.97) and "0.970 of its values" in ok.reason
    worse = flipped.copy()
    worse[1, :10] = (worse[1, :10] + 1) % 40
    bad = _check_output("cls", list(labels), list(worse), int8)
    assert not bad.passed and "< 0.95" in bad.reason
    # fp32 stays exact
    assert not _check_output("cls", list(labels), list(flipped), fp32).passed
    assert _check_output("cls", list(labels), list(labels), fp32).passed


def test_an_output_of_near_zeros_is_judged_by_its_differences_not_its_cosine() -> None:
    from duh.compiler.verify import _check_output, tolerance_for

    rng = np.random.default_rng(0)
    ref = rng.uniform(0, 1e-7, (2, 1, 16, 16)).astype(np.float32)  # a map of near-zeros
    got = ref + rng.uniform(-5e-8, 5e-8, ref.shape).astype(np.float32)
    fp32 = tolerance_for("fp32")
    check = _check_output("map", list(ref), list(got), fp32)
    assert check.cosine < fp32.min_cosine and check.passed, check
    # the same cosine on differences above the floor still fails
    assert not _check_output("map", list(ref * 1e4), list(got * 1e4), fp32).passed


def test_an_int8_probability_map_within_one_8_bit_step_passes_whatever_its_cosine() -> None:
    # A text detector's sigmoid map on synthetic inputs: near zero everywhere (ppocrv5_det),
    # its INT8 cosine 0.59 although no value moved by a step of an 8-bit code over [0, 1].
    from duh.compiler.verify import _check_output, tolerance_for

    rng = np.random.default_rng(0)
    ref = rng.uniform(0, 2e-3, (2, 1, 16, 16)).astype(np.float32)
    got = np.clip(ref + rng.uniform(-2e-3, 2e-3, ref.shape), 0, 1).astype(np.float32)
    int8 = tolerance_for("int8")
    check = _check_output("map", list(ref), list(got), int8)
    assert check.cosine < int8.min_cosine and check.passed, check
    # past one step, or on an output not bounded in [0, 1], the cosine decides as before
    assert not _check_output("map", list(ref), list(np.clip(got * 4, 0, 1)), int8).passed
    assert not _check_output("map", list(ref - 1e-3), list(got - 1e-3), int8).passed


def test_a_float_source_keeps_fp32_tolerances(tmp_path: Path) -> None:
    result = build(FIXTURES / "multi_io.onnx", ORT, tmp_path / "f.duh")
    assert result.manifest is not None
    assert result.manifest.checks["criteria"] == "fp32 tolerances"
    assert result.manifest.checks["tolerance"]["atol"] == 1e-4


def test_a_scalar_input_reaches_the_engine_with_rank_zero(tmp_path: Path) -> None:
    model = _wild.sample_rate_model(tmp_path / "vad.onnx")
    build(model, ORT, tmp_path / "vad.duh")
    with duh.load(tmp_path / "vad.duh") as session:
        x = np.ones((1, 8), np.float32)
        assert session.run({"x": x, "sr": np.array(16000)})["y"].shape == (1, 8)
        with pytest.raises(duh.DuhError, match=r"sr\[\]"):  # the other branch, shown as rank 0
            session.run({"x": x, "sr": np.array(8000)})


def test_check_data_reads_images_with_the_calibration_preprocessing(tmp_path: Path) -> None:
    image = pytest.importorskip("PIL.Image")
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        pixels = rng.integers(0, 256, (16, 16), dtype=np.uint8)
        image.fromarray(pixels).save(images / f"{i}.png")
    result = build(
        FIXTURES / "digits_cnn.onnx",
        ORT,
        tmp_path / "img.duh",
        check_data=images,
        calib_options={"preprocess": {"config": None, "spec": "resize=8,order=gray"}},
    )
    assert result.manifest is not None
    checks = result.manifest.checks
    assert checks["passed"] is True and checks["samples"] == 3
    assert "images in images/" in checks["input_source"]


def test_token_ids_compared_with_a_pad_id_keep_their_table_range(tmp_path: Path) -> None:
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 5])
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 5, 2])
    pad = helper.make_tensor_value_info("pad", TensorProto.BOOL, [1, 5])
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["out"]),
        helper.make_node("Equal", ["ids", "zero"], ["pad"]),
    ]
    inits = [
        onnx.numpy_helper.from_array(np.zeros((7, 2), np.float32), "table"),
        onnx.numpy_helper.from_array(np.array(0, np.int64), "zero"),
    ]
    source = ingest(_wild.save(tmp_path / "pad.onnx", nodes, [ids], [out, pad], inits))
    found = input_ranges(source.model, source.inputs)["ids"]
    assert (found.low, found.high) == (0, 7)


def _lstm_model(path: Path, features: int = 26, hidden: int = 4) -> Path:
    """An LSTM over x[time, batch, features] whose feature count its W fixes but the input's
    declared shape leaves open (madmom's BLSTMs)."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.1, (1, 4 * hidden, features)).astype(np.float32)
    r = rng.normal(0, 0.1, (1, 4 * hidden, hidden)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("LSTM", ["x", "w", "r"], ["y"], hidden_size=hidden)],
        "lstm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["time", 1, "features"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["time", 1, 1, 4])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(r, "r")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_an_lstm_whose_weight_fixes_the_features_builds_without_shape(tmp_path: Path) -> None:
    result = build(_lstm_model(tmp_path / "lstm.onnx"), ORT, tmp_path / "a.duh")
    assert result.manifest is not None and result.manifest.checks["passed"] is True
    assert result.manifest.inputs[0].shape == ("time", 1, 26)


def test_a_reference_failing_on_guessed_sizes_names_the_sizes_and_shape_first(
    tmp_path: Path,
) -> None:
    # A bias of 26 features broadcasts onto 1 feature too, so no weight fixes the size: every
    # guess (32, 256, 2048) fails, and the error says which sizes ran and how to give them.
    bias = numpy_helper.from_array(np.ones((1, 1, 26), np.float32), "bias")
    model = _wild.save(
        tmp_path / "bias.onnx",
        [helper.make_node("Add", ["x", "bias"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["time", 1, "features"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["time", 1, 26])],
        [bias],
    )
    with pytest.raises(ModelError) as refused:
        build(model, ORT, tmp_path / "a.duh")
    message = str(refused.value)
    assert "sizes guessed for its dynamic dimensions" in message, message
    assert "x['time', 1, 'features'] ran as" in message and "--shape NAME=" in message, message
    result = build(model, ORT, tmp_path / "b.duh", shapes={"x": (10, 1, 26)})
    assert result.manifest is not None and result.manifest.checks["passed"] is True


def _elementwise_or_matmul(path: Path, matmul: bool) -> Path:
    weight = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32), "w"
    )
    nodes = [helper.make_node("Abs", ["x"], ["a"])]
    nodes.append(
        helper.make_node("MatMul", ["a", "w"], ["y"])
        if matmul
        else helper.make_node("Neg", ["a"], ["y"])
    )
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [weight] if matmul else [],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_an_int8_build_that_quantizes_nothing_says_it_computes_in_float(tmp_path: Path) -> None:
    plain = _elementwise_or_matmul(tmp_path / "abs.onnx", matmul=False)
    result = build(plain, "onnxruntime:cpu-int8", tmp_path / "abs.duh", calib="synthetic")
    assert any("nothing in abs.onnx was quantized" in w for w in result.warnings), result.warnings
    assert any("computes in float" in w for w in read_manifest(tmp_path / "abs.duh").warnings)
    dense = _elementwise_or_matmul(tmp_path / "mm.onnx", matmul=True)
    result = build(dense, "onnxruntime:cpu-int8", tmp_path / "mm.duh", calib="synthetic")
    assert not any("was quantized" in w for w in result.warnings), result.warnings


def _erf_gelu_between_convs(path: Path) -> Path:
    """Conv -> torch's erf-GELU x*(1+erf(x/sqrt2))*0.5 -> Conv, with a residual Add that reads
    the GELU (so onnxsim cannot fold the 0.5 into the next Conv): atspm's funcnet, eeg models."""
    rng = np.random.default_rng(0)

    def init(name: str, value: object) -> onnx.TensorProto:
        return numpy_helper.from_array(np.asarray(value, np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c0"], pads=[1, 1]),
        helper.make_node("Add", ["c0", "r"], ["c1"]),
        helper.make_node("Div", ["c1", "sqrt2"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["a"]),
        helper.make_node("Mul", ["c1", "a"], ["m"]),
        helper.make_node("Mul", ["m", "half"], ["g"]),
        helper.make_node("Conv", ["g", "w2", "b2"], ["y0"], pads=[1, 1]),
        helper.make_node("Add", ["y0", "g"], ["y"]),
    ]
    inits = [
        init("w1", rng.standard_normal((8, 4, 3)) * 0.3), init("b1", rng.standard_normal(8) * 0.1),
        init("w2", rng.standard_normal((8, 8, 3)) * 0.3), init("b2", rng.standard_normal(8) * 0.1),
        init("sqrt2", 1.4142135), init("one", 1.0), init("half", 0.5),
        init("r", rng.standard_normal((1, 8, 1))),
    ]  # fmt: skip
    return _wild.save(
        path, nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, "T"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, "T"])],
        inits,
    )  # fmt: skip


def test_a_fused_contrib_gelu_keeps_its_output_type_for_the_int8_quantizer(
    tmp_path: Path,
) -> None:
    # Below opset 20 the fuse pass writes com.microsoft Gelu, whose output type ONNX's shape
    # inference cannot give: ORT's static quantizer then could not quantize the next Conv's bias.
    model = _erf_gelu_between_convs(tmp_path / "gelu.onnx")
    result = build(model, "onnxruntime:cpu-int8", tmp_path / "gelu.duh", calib="synthetic")
    assert result.manifest is not None and result.manifest.checks["passed"]
    fuse = next(p for p in result.manifest.passes if p["name"] == "fuse")
    assert fuse["nodes_after"] < fuse["nodes_before"]  # the Gelu was fused


def test_a_batch_2_feed_the_source_answers_with_inf_is_left_out(tmp_path: Path) -> None:
    # y = x / (2 - batch): finite at batch 1, Inf at batch 2, as a graph network's is when the
    # synthetic batch leaves a graph slot empty (minimol): such a feed checks nothing real
    # inputs do, and an INT8 artifact spreads the Inf through a shared scale.
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], end=1),
        helper.make_node("Cast", ["shape"], ["n"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["two", "n"], ["d"]),
        helper.make_node("Div", ["x", "d"], ["y"]),
    ]
    model = _wild.save(
        tmp_path / "inf.onnx", nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(np.array([2.0], np.float32), "two")],
    )  # fmt: skip
    feeds = check_feeds(ingest(model), 4, {})
    assert [f["x"].shape[0] for f in feeds.feeds] == [1, 1, 1, 1]
    assert "batch 1 only" in feeds.source
