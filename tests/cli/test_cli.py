"""The CLI through typer's test runner: exit codes, error lines, and nothing left behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from duh.cli import app

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
runner = CliRunner()


def _run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_targets_json_lists_every_design_target() -> None:
    code, out, _ = _run("targets", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)["targets"]}
    for name in (
        "cpu",
        "cpu-fp32",
        "cpu-int8",
        "cpu-bf16",
        "cpu-fp16",
        "cuda",
        "cuda-fp16",
        "cuda-int8",
        "auto",
        "onnxruntime:cpu-fp32",
        "openvino:cpu-fp32",
        "openvino:cpu-bf16",
        "tvm:cpu-fp32",
        "tensorrt:cuda-int8",
    ):
        assert name in rows, name
    assert rows["onnxruntime:cpu-fp32"]["available"] is True
    assert rows["tensorrt:cuda-fp16"]["available"] is False
    assert "no CUDA device" in rows["tensorrt:cuda-fp16"]["reason"]


def test_build_then_inspect(tmp_path: Path) -> None:
    out = tmp_path / "digits.duh"
    code, stdout, stderr = _run(
        "build", str(FIXTURES / "digits_cnn.onnx"), "-t", "openvino:cpu-fp32", "-o", str(out)
    )
    assert code == 0, stderr
    assert "openvino:cpu-fp32" in stdout and (out / "model.xml").is_file()
    code, stdout, _ = _run("inspect", str(out), "--json")
    info = json.loads(stdout)
    assert code == 0 and info["kind"] == "artifact" and info["integrity"] == "ok"
    assert info["manifest"]["target"]["resolved"] == "openvino:cpu-fp32"
    code, stdout, _ = _run("inspect", str(FIXTURES / "digits_cnn.onnx"), "--json")
    info = json.loads(stdout)
    assert info["model"]["ops"]["Conv"] == 2 and info["model"]["opset"] == 17
    assert info["inputs"][0]["shape"] == ["batch", 1, 8, 8]
    assert info["model"]["parameters"] > 10_000


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path) -> None:
    code, stdout, _ = _run(
        "build",
        str(FIXTURES / "digits_cnn.onnx"),
        "-t",
        "cpu",
        "-o",
        str(tmp_path / "x.duh"),
        "--dry-run",
    )
    assert code == 0
    assert "onnxruntime:cpu-fp32" in stdout and "openvino:cpu-fp32" in stdout
    assert "simplify(" in stdout and "cleanup(" in stdout
    assert list(tmp_path.iterdir()) == []


def _bad_inputs(tmp: Path) -> list[tuple[list[str], int, str]]:
    truncated = tmp / "truncated.onnx"
    truncated.write_bytes((FIXTURES / "digits_cnn.onnx").read_bytes()[:3000])
    text = tmp / "readme.onnx"
    text.write_text("hello\n")
    decoder = tmp / "decoder.onnx"
    graph = helper.make_graph(
        [helper.make_node("ImageDecoder", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, ["h", "w", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    onnx.save(model, decoder)
    lonely = tmp / "mlp_external.onnx"
    shutil.copy(FIXTURES / "mlp_external.onnx", lonely)
    return [
        ([str(truncated)], 3, "truncated.onnx"),
        ([str(text)], 3, "readme.onnx"),
        ([str(lonely)], 3, "external file 'mlp_external.onnx.data'"),
        ([str(tmp / "missing.onnx")], 3, "does not exist"),
        ([str(FIXTURES / "digits_cnn.onnx"), "-t", "gpu-fp99"], 2, "unknown target 'gpu-fp99'"),
        ([str(FIXTURES / "digits_cnn.onnx"), "-t", "cuda-fp16"], 5, "no CUDA device"),
        ([str(FIXTURES / "digits_cnn.onnx"), "-t", "cpu-int8"], 6, "needs calibration data"),
        ([str(FIXTURES / "digits_cnn.onnx"), "--shape", "input=1by8"], 2, "is not NAME=DxDxD"),
        ([str(FIXTURES / "digits_cnn.onnx"), "--passes", "simplify,zap"], 2, "unknown pass 'zap'"),
        ([str(decoder)], 3, "cannot run decoder.onnx: [ONNXRuntimeError] : 9 : NOT_IMPLEMENTED"),
        ([str(decoder), "--no-verify"], 5, "NOT_IMPLEMENTED"),
    ]


@pytest.mark.parametrize("case", range(11))
def test_bad_input_gives_one_line_and_exit_code(tmp_path: Path, case: int) -> None:
    args, code, message = _bad_inputs(tmp_path)[case]
    before = set(tmp_path.iterdir())
    out = tmp_path / "out.duh"
    result = runner.invoke(app, ["build", *args, "-o", str(out)])
    assert result.exit_code == code, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert lines[0].startswith("error:")
    assert message in " ".join(result.stderr.split())
    assert set(tmp_path.iterdir()) == before  # no artifact, no temp dirs


def test_inspect_reports_a_tampered_artifact(tmp_path: Path) -> None:
    out = tmp_path / "m.duh"
    assert (
        _run(
            "build", str(FIXTURES / "multi_io.onnx"), "-t", "onnxruntime:cpu-fp32", "-o", str(out)
        )[0]
        == 0
    )
    (out / "model.onnx").write_bytes(b"junk")
    code, stdout, _ = _run("inspect", str(out), "--json")
    assert code == 0 and "modified after the build" in json.loads(stdout)["integrity"]


def test_build_json_output(tmp_path: Path) -> None:
    code, stdout, _ = _run(
        "build",
        str(FIXTURES / "multi_io.onnx"),
        "-t",
        "onnxruntime:cpu-fp32",
        "-o",
        str(tmp_path / "j.duh"),
        "--json",
    )
    data = json.loads(stdout)
    assert code == 0 and data["resolved"] == "onnxruntime:cpu-fp32"
    assert data["manifest"]["checks"]["passed"] is True


def test_a_recipe_spells_out_the_pipeline(tmp_path: Path) -> None:
    code, stdout, _ = _run("build", str(FIXTURES / "digits_cnn.onnx"), "-t", "onnxruntime:cpu-fp32",
                           "--dry-run", "--json")
    recipe = json.loads(stdout)["candidates"][0]["recipe"]
    assert '[[pass]]\nname = "simplify"\nskip_fuse_bn = false' in recipe
    edited = tmp_path / "recipe.toml"
    edited.write_text('[[pass]]\nname = "cleanup"\nremove_identity = false\n')
    out = tmp_path / "r.duh"
    code, _, stderr = _run("build", str(FIXTURES / "digits_cnn.onnx"), "-t", "onnxruntime:cpu-fp32",
                           "--recipe", str(edited), "-o", str(out))
    assert code == 0, stderr
    passes = json.loads((out / "manifest.json").read_text())["passes"]
    assert [(p["name"], p["config"]["remove_identity"]) for p in passes] == [("cleanup", False)]
    edited.write_text('[[pass]]\nname = "cleanup"\nturbo = true\n')
    code, _, stderr = _run("build", str(FIXTURES / "digits_cnn.onnx"), "--recipe", str(edited),
                           "-o", str(tmp_path / "bad.duh"))
    assert code == 2 and "has no option 'turbo'" in stderr
    assert not (tmp_path / "bad.duh").exists()


def test_check_data_verifies_on_real_inputs(tmp_path: Path) -> None:
    out = tmp_path / "c.duh"
    code, stdout, stderr = _run("build", str(FIXTURES / "digits_cnn.onnx"), "-t",
                                "onnxruntime:cpu-fp32", "--check-data",
                                str(FIXTURES / "digits_test.npz"), "-o", str(out), "--json")
    assert code == 0, stderr
    checks = json.loads(stdout)["manifest"]["checks"]
    assert checks["passed"] is True and checks["samples"] == 8
    assert "digits_test.npz" in checks["input_source"]
    code, _, stderr = _run("build", str(FIXTURES / "digits_cnn.onnx"), "--check-data",
                           str(tmp_path / "nope.npz"), "-o", str(tmp_path / "n.duh"))
    assert code == 6 and stderr.startswith("error: check data") and "nope.npz" in stderr
    assert not (tmp_path / "n.duh").exists()
