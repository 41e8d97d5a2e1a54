"""``duh compare`` through the CLI: exit codes, --json, golden files, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import duh
from duh.cli import app

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
MODEL = str(FIXTURES / "digits_cnn.onnx")
DATA = str(FIXTURES / "digits_test.npz")
runner = CliRunner()


def _run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["compare", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def int8(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("cli-compare") / "digits.int8.duh"
    duh.build(MODEL, "onnxruntime:cpu-int8", out, calib=FIXTURES / "digits_calib.npz")
    return str(out)


def test_int8_against_its_source_passes_then_fails_a_tight_atol(int8: str) -> None:
    code, out, err = _run(MODEL, int8, "--data", DATA)
    assert code == 0, err
    assert "onnxruntime:cpu-int8" in out and "match: 1 subject(s) within tolerance" in out
    code, out, _ = _run(MODEL, int8, "--data", DATA, "--atol", "logits=1e-3", "--json")
    assert code == 11
    doc = json.loads(out)
    assert doc["schema"] == "duh.compare/1" and doc["passed"] is False
    (logits,) = doc["results"][0]["outputs"]
    assert logits["name"] == "logits" and logits["tolerance"]["atol"] == 1e-3
    assert logits["passed"] is False and logits["mismatched"] > 0
    assert set(logits) >= {"max_abs", "mean_abs", "max_rel", "cosine", "top1", "worst"}
    assert set(logits["worst"][0]) == {"feed", "index", "reference", "subject", "abs_diff"}
    assert doc["data"]["feeds"] == 540 and doc["reference"]["kind"] == "model"


def test_a_bare_value_sets_every_output_and_mismatch_says_which(int8: str) -> None:
    code, out, _ = _run(MODEL, int8, "--data", DATA, "--min-cosine", "0.99999", "--samples", "50")
    assert code == 11
    assert "mismatch:" in out and "cosine" in out and "FAIL" in out


def test_golden_round_trip_through_the_cli(int8: str, tmp_path: Path) -> None:
    golden = tmp_path / "golden.npz"
    code, out, err = _run(int8, "--data", DATA, "--save-outputs", str(golden))
    assert code == 0, err
    assert golden.is_file() and f"recorded {int8}'s outputs in {golden}" in out
    code, out, err = _run(int8, "--data", DATA, "--load-outputs", str(golden), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["reference"]["kind"] == "golden" and doc["reference"]["precision"] == "int8"
    assert doc["results"][0]["outputs"][0]["max_abs"] == 0.0
    # The source against the INT8 golden: held to INT8's criteria, which it meets.
    assert _run(MODEL, "--data", DATA, "--load-outputs", str(golden))[0] == 0
    with np.load(golden) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["output_0"] = arrays["output_0"][:, :, ::-1].copy()
    np.savez(golden, **arrays)
    code, out, _ = _run(int8, "--data", DATA, "--load-outputs", str(golden))
    assert code == 11 and "top-1 agreement" in out


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ((MODEL, "missing.duh", "--data", DATA), 7, "artifact 'missing.duh' does not exist"),
        ((MODEL, "missing.onnx", "--data", DATA), 3, "model 'missing.onnx' does not exist"),
        ((MODEL, MODEL, "--data", "nope.npz"), 6, "--data 'nope.npz' does not exist"),
        ((MODEL, MODEL, "--data", DATA, "--atol", "x"), 2, "--atol *='x': the value must be"),
        ((MODEL, MODEL, "--data", DATA, "--rtol", "out=1"), 2, "tolerance for unknown output"),
        ((MODEL, "--data", DATA), 2, "compare needs two models or artifacts"),
        ((MODEL, "--data", DATA, "--load-outputs", "none.npz"), 2, "'none.npz' does not exist"),
        (
            (str(FIXTURES / "multi_io.onnx"), MODEL, "--data", DATA),
            6,
            "the model's inputs are a, b",
        ),
    ],
)
def test_bad_input_is_one_line_with_its_exit_code(
    args: tuple[str, ...], code: int, message: str
) -> None:
    got, _, err = _run(*args)
    assert got == code, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert message in err


def test_image_data_goes_through_the_preprocessing(tmp_path: Path) -> None:
    from PIL import Image

    pixels = np.load(DATA)["input"][:6, 0]
    images = tmp_path / "images"
    images.mkdir()
    for k, image in enumerate(pixels):
        scaled = (255 * (image - image.min()) / max(float(np.ptp(image)), 1e-6)).astype(np.uint8)
        Image.fromarray(scaled).save(images / f"{k}.png")
    code, out, err = _run(
        MODEL, MODEL, "--data", str(images), "--preprocess", "order=gray", "--json"
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["data"]["feeds"] == 6 and "6 images in images/" in doc["data"]["source"]
    code, _, err = _run(
        MODEL, MODEL, "--data", str(images)
    )  # rgb: 3 channels for a 1-channel input
    assert code == 6 and "channels" in err and len(err.strip().splitlines()) == 1
