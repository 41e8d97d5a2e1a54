"""PyTorch models into duh: built from .pt2 and module.py:factory, checked against torch's own
predictions on held-out data; sources whose reading runs code refused without --trust-code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import duh
import duh.host
from duh.cli import app
from tests.frontends.conftest import Trained, torch

runner = CliRunner()


def _cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def _predict(artifact: Path, trained: Trained) -> np.ndarray:
    session = duh.load(artifact)
    try:
        return session.run({trained.input_name: trained.x_test})["output"]
    finally:
        session.close()


# Without VNNI the engines' u8 x s8 kernels add pairs in 16 bits, which saturate (ONNX Runtime
# documents it: reduce_range on such CPUs); an INT8 model agrees less there.
_VNNI = any(duh.host.host_info().has(f) for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def _assert_int8(logits: np.ndarray, trained: Trained) -> None:
    agree = float(np.mean(logits.argmax(-1) == trained.torch_logits.argmax(-1)))
    accuracy = float(np.mean(logits.argmax(-1) == trained.y_test))
    assert agree >= (0.99 if _VNNI else 0.97), agree
    assert abs(accuracy - trained.torch_accuracy) <= 0.01, (accuracy, trained.torch_accuracy)


def test_cnn_pt2_builds_for_cpu_and_matches_torch(digits_cnn: Trained, tmp_path: Path) -> None:
    assert digits_cnn.torch_accuracy > 0.9  # trained: the comparison below means something
    out = tmp_path / "cnn.cpu.duh"
    code, stdout, stderr = _cli(
        "build", str(digits_cnn.program), "--trust-code", "-t", "cpu",
        "--check-data", str(digits_cnn.check), "-o", str(out),
    )  # fmt: skip
    assert code == 0, stderr
    assert "against torch" in stdout
    logits = _predict(out, digits_cnn)
    np.testing.assert_allclose(logits, digits_cnn.torch_logits, atol=1e-4, rtol=1e-4)
    manifest = json.loads((out / "manifest.json").read_text())
    made = manifest["source"]["frontend"]
    assert made["frontend"] == "torch" and made["version"] == torch.__version__
    assert made["exporter"] == "dynamo" and made["form"] == "torch.export program"
    assert made["dynamic_axes"] == {"image": [0]}  # the program's own symbolic batch
    assert manifest["checks"]["framework"]["passed"] is True
    assert manifest["source"]["file"] == "model.pt2"


def test_cnn_factory_builds_for_cpu_int8_within_a_point(digits_cnn: Trained, tmp_path: Path) -> None:
    result = duh.build(
        digits_cnn.factory, "cpu-int8", tmp_path / "cnn.int8.duh", trust_code=True,
        dynamic={"image": (0,)}, calib=digits_cnn.calib, check_data=digits_cnn.check,
    )  # fmt: skip
    assert result.manifest is not None
    assert result.manifest.source["frontend"]["form"] == "module.py factory"
    assert result.manifest.checks["framework"]["passed"] is True
    _assert_int8(_predict(tmp_path / "cnn.int8.duh", digits_cnn), digits_cnn)


def test_cnn_inc_static_int8_goes_through_the_targets(digits_cnn: Trained, tmp_path: Path) -> None:
    pytest.importorskip("neural_compressor.torch", reason="duh[inc] is not installed")
    out = tmp_path / "cnn.inc.duh"
    code, _, stderr = _cli(
        "build", digits_cnn.factory, "--trust-code", "--dynamic", "image:0", "-t", "cpu-int8",
        "--quantizer", "inc", "--calib", str(digits_cnn.calib),
        "--check-data", str(digits_cnn.check), "-o", str(out),
    )  # fmt: skip
    assert code == 0, stderr
    manifest = json.loads((out / "manifest.json").read_text())
    quantizer = manifest["source"]["frontend"]["quantizer"]
    assert quantizer["name"] == "inc" and quantizer["recipe"] == "static"
    assert "QuantizeLinear" in manifest["source"]["quantized"]  # INC's QDQ, not duh's
    _assert_int8(_predict(out, digits_cnn), digits_cnn)


def test_encoder_builds_for_cpu_and_cpu_int8(text_encoder: Trained, tmp_path: Path) -> None:
    assert text_encoder.torch_accuracy > 0.9
    fp32 = duh.build(
        text_encoder.program, "cpu", tmp_path / "enc.cpu.duh", trust_code=True,
        check_data=text_encoder.check,
    )  # fmt: skip
    assert fp32.manifest is not None and fp32.manifest.checks["framework"]["passed"] is True
    logits = _predict(tmp_path / "enc.cpu.duh", text_encoder)
    np.testing.assert_allclose(logits, text_encoder.torch_logits, atol=1e-4, rtol=1e-4)
    duh.build(
        text_encoder.program, "cpu-int8", tmp_path / "enc.int8.duh", trust_code=True,
        calib=text_encoder.calib, check_data=text_encoder.check,
    )  # fmt: skip
    _assert_int8(_predict(tmp_path / "enc.int8.duh", text_encoder), text_encoder)


@pytest.mark.slow
def test_encoder_inc_static_int8(text_encoder: Trained, tmp_path: Path) -> None:
    pytest.importorskip("neural_compressor.torch", reason="duh[inc] is not installed")
    duh.build(
        text_encoder.factory, "cpu-int8", tmp_path / "enc.inc.duh", trust_code=True,
        dynamic={"tokens": (0,)}, quantizer="inc", calib=text_encoder.calib,
        check_data=text_encoder.check,
    )  # fmt: skip
    _assert_int8(_predict(tmp_path / "enc.inc.duh", text_encoder), text_encoder)


# -- what is refused ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unsafe(digits_cnn: Trained, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Every form whose reading runs code: TorchScript, a pickled module, module.py, .pt2."""
    tmp = tmp_path_factory.mktemp("unsafe")
    example = torch.from_numpy(digits_cnn.x_test[:1])
    torch.jit.save(torch.jit.trace(digits_cnn.module, example), tmp / "scripted.pt")
    torch.save(digits_cnn.module, tmp / "pickled.pth")
    return {
        "TorchScript module": str(tmp / "scripted.pt"),
        "pickled torch module": str(tmp / "pickled.pth"),
        "Python module": digits_cnn.factory,
        "torch.export program": str(digits_cnn.program),
    }


@pytest.mark.parametrize(
    "form",
    ["TorchScript module", "pickled torch module", "Python module", "torch.export program"],
)
def test_code_running_sources_refused_without_trust_code(
    unsafe: dict[str, str], form: str, tmp_path: Path
) -> None:
    code, _, stderr = _cli("build", unsafe[form], "-o", str(tmp_path / "x.duh"))
    assert code == 2
    line = stderr.strip()
    assert "\n" not in line and f"is a {form}" in line and "--trust-code" in line
    assert not (tmp_path / "x.duh").exists()


def test_torchscript_builds_with_trust_code_and_a_shape(unsafe: dict[str, str], tmp_path: Path,
                                                        digits_cnn: Trained) -> None:
    out = tmp_path / "ts.duh"
    code, _, stderr = _cli(
        "build", unsafe["TorchScript module"], "--trust-code", "--shape", "image=1x1x8x8",
        "--target", "onnxruntime:cpu", "-o", str(out),
    )  # fmt: skip
    assert code == 0, stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["frontend"]["exporter"] == "torchscript"
    session = duh.load(out)
    got = session.run({"image": digits_cnn.x_test[:1]})["output"]
    session.close()
    np.testing.assert_allclose(got, digits_cnn.torch_logits[:1], atol=1e-4)


@pytest.mark.parametrize("kind", ["truncated", "foreign"])
def test_truncated_or_foreign_files_fail_in_one_line(
    digits_cnn: Trained, tmp_path: Path, kind: str
) -> None:
    data = digits_cnn.program.read_bytes()
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(data[: len(data) // 2] if kind == "truncated" else b"\x08\x07onnx-ish" * 50)
    code, _, stderr = _cli("build", str(bad), "--trust-code", "-o", str(tmp_path / "x.duh"))
    assert code == 3
    assert "\n" not in stderr.strip() and "truncated, corrupt or of another format" in stderr
    broken = tmp_path / "broken.py"
    broken.write_text("import torch\ndef make(:\n")
    code, _, stderr = _cli("build", f"{broken}:make", "--trust-code")
    assert code == 3 and "not a readable Python file" in stderr and "\n" not in stderr.strip()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # The factory's own error (a name it forgot to define), with the line it was on.
        (
            "    return torch.nn.Linear(4, PITCH_BINS), (torch.zeros(1, 4),)\n",
            ("factory.py:make() raised NameError", "(at factory.py:3)"),
        ),
        # A forward that cannot take its own example inputs (4 features into a Linear of 8).
        (
            "    return torch.nn.Linear(8, 2), (torch.zeros(1, 4),)\n",
            ("forward fails on its example inputs (RuntimeError",),
        ),
    ],
)
def test_a_factory_or_forward_that_raises_is_one_line_naming_the_users_line(
    tmp_path: Path, body: str, expected: tuple[str, ...]
) -> None:
    factory = tmp_path / "factory.py"
    factory.write_text("import torch\ndef make():\n" + body)
    out = tmp_path / "out.duh"
    code, _, stderr = _cli("build", f"{factory}:make", "--trust-code", "-o", str(out))
    assert code == 3 and "\n" not in stderr.strip(), stderr
    assert all(e in stderr for e in expected), stderr
    assert not out.exists()


def test_missing_torch_names_the_extra(digits_cnn: Trained) -> None:
    # torch made unimportable in a fresh interpreter: the error names duh[torch].
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "from duh.cli import main\n"
        f"sys.argv = ['duh', 'build', {str(digits_cnn.program)!r}, '--trust-code']\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 9, done.stderr
    assert "pip install 'duh[torch]'" in done.stderr
