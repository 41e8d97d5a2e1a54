"""TensorRT: target resolution, optimization profiles, engine settings, manifest compatibility.

Everything that needs no GPU runs here; engine builds and runs are marked ``gpu`` and skip with
the reason on hosts without one (GPU paths are not exercised on CPU-only machines). The Q/DQ
rules of cuda-int8 are tested in test_cuda_qdq.py.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

import duh
from duh._cuda import CudaInfo, cuda_info
from duh.cli import app
from duh.cli._common import parse_shapes, shape_profile_options
from duh.compiler import build as build_model
from duh.compiler.artifact import write_manifest
from duh.compiler.ingest import ingest
from duh.errors import ArtifactError, ConfigError, MissingDependencyError, TargetError
from duh.host import CudaDevice, host_info
from duh.passes import create_pass
from duh.runtime import FORMAT_VERSION, Manifest, TensorSpec, hash_files
from duh.targets import TargetSpec, candidates, get_target, parse_target
from duh.targets._gpu import (
    ShapeRange,
    input_profiles,
    int8_quantize_config,
    parse_shape_range,
    profile_ranges,
    settings_from_options,
    trt_ep_profile_options,
)
from duh.targets.tensorrt import check_engine_compat

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
INFO = cuda_info()
needs_gpu = pytest.mark.skipif(
    get_target("tensorrt").unavailable_reason("cuda", "fp32", host_info()) is not None,
    reason=f"TensorRT cannot build here: "
    f"{get_target('tensorrt').unavailable_reason('cuda', 'fp32', host_info())}",
)
needs_no_gpu = pytest.mark.skipif(bool(INFO.devices), reason="this host has a CUDA device")


# --- target resolution -------------------------------------------------------------------------


def test_cuda_targets_parse_to_tensorrt_and_onnxruntime() -> None:
    request = parse_target("tensorrt:cuda-int8")
    assert (request.engine, request.device, request.precision) == ("tensorrt", "cuda", "int8")
    assert parse_target("onnxruntime:cuda-fp16").engine == "onnxruntime"


@needs_no_gpu
@pytest.mark.parametrize("name", ["cuda", "cuda-fp16", "cuda-int8"])
def test_cuda_short_names_fail_here_with_each_engines_reason(name: str) -> None:
    with pytest.raises(TargetError) as err:
        candidates(parse_target(name), host_info())
    text = str(err.value)
    pinned = name if "-" in name else f"{name}-fp32"
    assert f"tensorrt:{pinned}" in text and f"onnxruntime:{pinned}" in text
    assert "no CUDA device" in text


@needs_no_gpu
def test_the_headline_build_fails_cleanly_without_a_gpu() -> None:
    result = CliRunner().invoke(
        app,
        ["build", str(FIXTURES / "digits_cnn.onnx"), "--target", "cuda-int8", "--calib",
         str(FIXTURES / "digits_calib.npz"), "--dry-run"],
    )
    assert result.exit_code == TargetError.exit_code
    assert "no CUDA device" in result.output


def test_a_gpu_host_without_tensorrt_is_told_what_to_install() -> None:
    if INFO.tensorrt is not None:
        pytest.skip("tensorrt is installed here")
    gpu = CudaDevice(0, "NVIDIA A10", "8.6", "550.54.15", 24_000)
    host = dataclasses.replace(host_info(), cuda=(gpu,))
    reason = get_target("tensorrt").unavailable_reason("cuda", "int8", host)
    assert reason == "package tensorrt missing: pip install 'duh[gpu]'"


def test_int8_pipeline_quantizes_symmetrically_per_channel() -> None:
    plugin = get_target("tensorrt")
    names = [p.name for p in plugin.default_passes(TargetSpec("tensorrt", "cuda", "int8"))]
    assert names[-1] == "quantize" and "fuse" not in names
    quantize = plugin.default_passes(TargetSpec("tensorrt", "cuda", "int8"))[-1]
    assert dict(quantize.config) == int8_quantize_config()
    create_pass(quantize.name, quantize.config)  # the quantize pass accepts the config
    fp16 = plugin.default_passes(TargetSpec("tensorrt", "cuda", "fp16"))
    assert fp16[-1].name == "fp16"


# --- optimization profiles ---------------------------------------------------------------------


def _io_model(dims: list[int | str], second: list[int | str] | None = None) -> onnx.ModelProto:
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)]
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)]
    if second is not None:
        inputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, second))
        nodes.append(helper.make_node("Relu", ["z"], ["w"]))
        outputs.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, second))
    graph = helper.make_graph(nodes, "io", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_dynamic_batch_gets_a_default_profile() -> None:
    model = ingest(FIXTURES / "digits_cnn.onnx").model
    (profile,) = input_profiles(model, {}, max_batch=16)
    assert profile.name == "input"
    assert profile.range == ShapeRange((1, 1, 8, 8), (1, 1, 8, 8), (16, 1, 8, 8))
    assert profile.source.startswith("default")


def test_shape_ranges_from_the_command_line_become_the_profile() -> None:
    options = shape_profile_options(["x=1x3x32x32:4x3x64x64:8x3x128x128", "k=1x4"])
    assert options == {"profile.x": "1x3x32x32:4x3x64x64:8x3x128x128"}
    assert parse_shapes(["x=1x3x32x32:4x3x64x64:8x3x128x128", "k=1x4"]) == {"k": (1, 4)}
    model = _io_model(["N", 3, "H", "W"])
    (profile,) = input_profiles(model, profile_ranges(options), max_batch=32)
    assert profile.range.min == (1, 3, 32, 32)
    assert profile.range.opt == (4, 3, 64, 64)
    assert profile.range.max == (8, 3, 128, 128)
    assert profile.to_json()["source"] == "--shape"
    assert trt_ep_profile_options([profile]) == {
        "trt_profile_min_shapes": "x:1x3x32x32",
        "trt_profile_opt_shapes": "x:4x3x64x64",
        "trt_profile_max_shapes": "x:8x3x128x128",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1x3:2x3", "MIN:OPT:MAX"),
        ("4x3:2x3:8x3", "min <= opt <= max"),
        ("1x3:2x3x1:4x3", "different ranks"),
        ("1xa:2x3:4x3", "not a shape"),
        ("0x3:2x3:4x3", "below 1"),
    ],
)
def test_malformed_ranges_are_config_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_shape_range(text, "x")


def test_the_cli_rejects_malformed_ranges_before_building() -> None:
    with pytest.raises(ConfigError, match="MIN:OPT:MAX"):
        shape_profile_options(["x=1x3:2x3"])
    result = CliRunner().invoke(
        app, ["build", str(FIXTURES / "digits_cnn.onnx"), "--shape", "input=1:2", "--dry-run"]
    )
    assert result.exit_code == ConfigError.exit_code
    assert "MIN:OPT:MAX" in result.output


def test_profiles_must_fit_their_inputs() -> None:
    model = _io_model(["N", 3, 16])
    with pytest.raises(ConfigError, match="rank 2"):
        input_profiles(model, {"x": parse_shape_range("1x3:2x3:4x3", "x")}, 32)
    with pytest.raises(ConfigError, match="fixed at 3"):
        input_profiles(model, {"x": parse_shape_range("1x4x16:2x4x16:4x4x16", "x")}, 32)
    with pytest.raises(ConfigError, match="model's inputs are x"):
        input_profiles(model, {"nope": parse_shape_range("1x3x16", "nope")}, 32)


def test_dynamic_dimensions_besides_the_batch_need_a_range() -> None:
    model = _io_model(["N", "seq"])
    with pytest.raises(ConfigError, match=r"--shape x=MIN:OPT:MAX"):
        input_profiles(model, {}, 32)
    (profile,) = input_profiles(model, {"x": parse_shape_range("1x8:2x64:4x128", "x")}, 32)
    assert profile.range.max == (4, 128)


def test_inputs_sharing_a_dimension_need_the_same_range() -> None:
    model = _io_model(["N", 8], ["N", 4])
    profiles = input_profiles(model, {}, 8)
    assert [p.range.max for p in profiles] == [(8, 8), (8, 4)]
    with pytest.raises(ConfigError, match="need the same range"):
        input_profiles(
            model,
            {
                "x": parse_shape_range("1x8:2x8:4x8", "x"),
                "z": parse_shape_range("1x4:2x4:8x4", "z"),
            },
            8,
        )


def test_engine_settings_come_from_options() -> None:
    settings = settings_from_options(
        {"workspace_mb": "2048", "hardware_compatible": "true", "max_batch": "8"}
    )
    assert settings.workspace_mb == 2048 and settings.hardware_compatible
    assert settings.max_batch == 8 and not settings.version_compatible
    assert settings_from_options({}).workspace_mb is None
    with pytest.raises(ConfigError, match="not an integer"):
        settings_from_options({"workspace_mb": "lots"})
    with pytest.raises(ConfigError, match="not a boolean"):
        settings_from_options({"version_compatible": "maybe"})
    with pytest.raises(ConfigError, match="out of range"):
        settings_from_options({"optimization_level": "9"})


# --- manifest compatibility --------------------------------------------------------------------


def _info(cc: str | None, trt: str | None = "10.13.3.9") -> CudaInfo:
    devices = () if cc is None else (CudaDevice(0, "NVIDIA GPU", cc, "550.54.15", 24_000),)
    reason = None if devices else "no CUDA device: libcuda.so.1 not found"
    return CudaInfo(devices, "550.54.15", "12.4", "12.4", trt, reason)


def _req(cc: str = "8.6", trt: str = "10.13.3.9", **extra: object) -> dict[str, object]:
    return {"cuda_compute_capability": cc, "tensorrt_version": trt, **extra}


def test_an_engine_runs_where_it_was_built() -> None:
    check_engine_compat(_req(), _info("8.6"))


def test_another_compute_capability_is_refused_unless_hardware_compatible() -> None:
    with pytest.raises(ArtifactError, match="built for compute capability 8.6.*has 8.9"):
        check_engine_compat(_req(), _info("8.9"))
    check_engine_compat(_req(hardware_compatibility_level="ampere_plus"), _info("8.9"))
    with pytest.raises(ArtifactError, match="8.0 or newer"):
        check_engine_compat(_req(hardware_compatibility_level="ampere_plus"), _info("7.5"))


def test_another_tensorrt_version_is_refused_unless_version_compatible() -> None:
    with pytest.raises(ArtifactError, match="built with TensorRT 10.13.3.9, this host has 10.14"):
        check_engine_compat(_req(), _info("8.6", "10.14.1.48"))
    check_engine_compat(_req(version_compatible=True), _info("8.6", "10.14.1.48"))
    with pytest.raises(ArtifactError, match="later releases of their major version"):
        check_engine_compat(_req(version_compatible=True), _info("8.6", "10.8.0.43"))
    with pytest.raises(ArtifactError, match="this host has 11.4.0.106"):
        check_engine_compat(_req(version_compatible=True), _info("8.6", "11.4.0.106"))


def test_no_gpu_or_no_tensorrt_is_refused() -> None:
    with pytest.raises(ArtifactError, match="no CUDA device"):
        check_engine_compat(_req(), _info(None))
    with pytest.raises(MissingDependencyError, match=r"duh\[gpu\]"):
        check_engine_compat(_req(), _info("8.6", None))


@needs_no_gpu
def test_loading_a_tensorrt_artifact_here_is_refused_clearly(tmp_path: Path) -> None:
    artifact = tmp_path / "model.duh"
    artifact.mkdir()
    (artifact / "model.engine").write_bytes(b"\0" * 64)
    spec = TensorSpec("input", "float32", ("batch", 1, 8, 8))
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        duh_version=duh.__version__,
        engine="tensorrt",
        engine_version="10.13.3.9",
        target={"requested": "cuda-int8", "engine": "tensorrt", "device": "cuda"},
        inputs=(spec,),
        outputs=(TensorSpec("logits", "float32", ("batch", 10)),),
        files=hash_files(artifact),
        engine_config={"engine": "model.engine", "device": 0},
        host_requirements=_req(),
    )
    write_manifest(artifact, manifest)
    with pytest.raises(ArtifactError, match=r"needs a CUDA device \(compute capability 8.6\)"):
        duh.load(artifact)
    data = json.loads((artifact / "manifest.json").read_text())
    assert data["host_requirements"]["tensorrt_version"] == "10.13.3.9"


@needs_no_gpu
def test_cuda_buffers_without_a_driver_fail_with_the_cuda_error() -> None:
    pytest.importorskip("cuda.bindings.runtime")
    from duh.targets.tensorrt._runtime import cuda_check, cuda_runtime

    cudart = cuda_runtime()
    with pytest.raises(TargetError, match=r"CUDA failed creating a CUDA stream: cudaError\w+"):
        cuda_check(cudart, cudart.cudaStreamCreate(), "creating a CUDA stream")
    # A successful call unpacks to its value.
    assert cuda_check(cudart, cudart.cudaRuntimeGetVersion(), "reading the version") > 0


# --- on a GPU ----------------------------------------------------------------------------------


@needs_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engines_build_and_match_the_source(precision: str, tmp_path: Path) -> None:
    calib = str(FIXTURES / "digits_calib.npz") if precision == "int8" else None
    out = tmp_path / f"digits.{precision}.duh"
    result = build_model(
        FIXTURES / "digits_cnn.onnx", f"tensorrt:cuda-{precision}", out, calib=calib,
        target_options={"profile.input": "1x1x8x8:4x1x8x8:16x1x8x8"},
    )
    assert result.manifest is not None and result.manifest.checks["passed"]
    req = result.manifest.host_requirements
    assert req["cuda_compute_capability"] == INFO.devices[0].compute_capability
    assert req["tensorrt_version"] == INFO.tensorrt
    with duh.load(out) as session:
        data = np.load(FIXTURES / "digits_test.npz")["input"][:16]
        got = session.run({"input": data})["logits"]
        want = ort.InferenceSession(str(FIXTURES / "digits_cnn.onnx")).run(None, {"input": data})[0]
        agree = float(np.mean(got.argmax(1) == want.argmax(1)))
        assert agree >= (1.0 if precision != "int8" else 0.9)


@needs_gpu
@pytest.mark.gpu
def test_a_changed_tensorrt_version_is_refused_at_load(tmp_path: Path) -> None:
    out = tmp_path / "digits.duh"
    build_model(FIXTURES / "digits_cnn.onnx", "tensorrt:cuda-fp32", out)
    path = out / "manifest.json"
    data = json.loads(path.read_text())
    data["host_requirements"]["tensorrt_version"] = "9.0.0"
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="built with TensorRT 9.0.0"):
        duh.load(out)
