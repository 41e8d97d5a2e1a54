"""Apache TVM on the CPU: host target, builds on fixtures and a real model, tuning and its cache.

TVM compiles are slow on small machines, so the artifacts are built once per session.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

import duh
from duh._cache import cache_dir
from duh.cli import app
from duh.compiler import build as build_model
from duh.errors import ArtifactError, ConfigError, TargetError
from duh.host import host_info
from duh.targets import get_target
from duh.targets.tvm._host import host_llvm_target, llvm_target, physical_cores
from tests.conftest import wheel_model

pytest.importorskip("tvm")

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
DIGITS = FIXTURES / "digits_cnn.onnx"


def _reference(model: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, feed)


@pytest.fixture(scope="module")
def conv_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny conv net with a fixed shape (quick to tune)."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b"),
        numpy_helper.from_array(rng.standard_normal((8 * 4 * 4, 5)).astype(np.float32), "fc"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    path = tmp_path_factory.mktemp("models") / "conv.onnx"
    onnx.save(model, path)
    return path


# --- the LLVM target ---------------------------------------------------------------------------


def test_mattr_reconciles_llvms_cpu_name_with_what_the_os_reports() -> None:
    # A VM whose CPU model reads as an older part while it exposes AVX-512 FP16, but not AMX.
    implied = {"avx", "avx2", "fma", "avx512f", "avx512vnni", "amx-tile", "amx-int8"}
    flags = frozenset({"avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_fp16"})
    target = llvm_target(flags, "icelake-server", implied, 4)
    assert "+avx512fp16" in target.mattr
    assert {"-amx-tile", "-amx-int8"} <= set(target.mattr)
    assert "avx512_fp16" in target.required_flags and "amx_tile" not in target.required_flags
    assert set(target.required_flags) <= flags
    assert target.to_json() == {
        "kind": "llvm",
        "mcpu": "icelake-server",
        "num-cores": 4,
        "mattr": list(target.mattr),
    }


def test_without_os_flags_llvms_cpu_name_is_trusted() -> None:
    target = llvm_target(frozenset(), "skylake", {"avx", "avx2", "fma"}, 2)
    assert target.mattr == ()
    assert target.required_flags == ("avx", "avx2", "fma")


def test_this_hosts_target_is_valid_for_tvm() -> None:
    import tvm

    host = host_info()
    target = host_llvm_target(host)
    assert tvm.target.Target(target.to_json()).kind.name == "llvm"
    assert set(target.required_flags) <= host.cpu_flags
    assert target.num_cores == physical_cores() >= 1


def test_tvm_is_available_for_cpu_targets_here() -> None:
    plugin = get_target("tvm")
    assert plugin.unavailable_reason("cpu", "fp32", host_info()) is None
    assert plugin.unavailable_reason("cpu", "int8", host_info()) is None
    assert plugin.unavailable_reason("cuda", "fp32", host_info()) is not None


def test_without_a_c_compiler_tvm_says_why(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.delenv("CXX", raising=False)
    reason = get_target("tvm").unavailable_reason("cpu", "fp32", host_info())
    assert reason is not None and "C compiler" in reason


# --- builds ------------------------------------------------------------------------------------


def test_digits_build_matches_the_source(built: Callable[..., Path]) -> None:
    artifact = built(DIGITS, "tvm:cpu")
    assert (artifact / "model.so").is_file()
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["engine"]["name"] == "tvm"
    assert manifest["target"]["resolved"] == "tvm:cpu-fp32"
    assert manifest["checks"]["passed"] is True
    flags = manifest["host_requirements"]["cpu_flags"]
    assert flags and set(flags) <= host_info().cpu_flags
    assert manifest["engine_config"]["target"]["kind"] == "llvm"
    assert any("untuned" in n for n in manifest["build"]["compile_notes"])
    data = np.load(FIXTURES / "digits_test.npz")
    with duh.load(artifact) as session:
        assert session.engine_name == "tvm"
        for batch in (1, 7):  # the batch dimension stayed dynamic
            feed = {"input": data["input"][:batch]}
            got = session.run(feed)["logits"]
            np.testing.assert_allclose(got, _reference(DIGITS, feed)[0], rtol=1e-4, atol=1e-4)
        accuracy = float(np.mean(session.run({"input": data["input"]})["logits"].argmax(1)
                                 == data["label"]))
        assert accuracy > 0.95


def test_sessions_run_from_several_threads(built: Callable[..., Path]) -> None:
    data = np.load(FIXTURES / "digits_test.npz")["input"]
    feeds = [{"input": data[i : i + 3]} for i in range(0, 24, 3)]
    want = [_reference(DIGITS, f)[0] for f in feeds]
    got: dict[int, np.ndarray] = {}
    with duh.load(built(DIGITS, "tvm:cpu"), threads=1) as session:

        def work(i: int) -> None:
            for _ in range(3):
                got[i] = session.run(feeds[i])["logits"]

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(feeds))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for i, expected in enumerate(want):
        np.testing.assert_allclose(got[i], expected, rtol=1e-4, atol=1e-4)


def test_op_profile_times_the_compiled_functions(built: Callable[..., Path]) -> None:
    with duh.load(built(DIGITS, "tvm:cpu"), profile=True) as session:
        session.run({"input": np.zeros((2, 1, 8, 8), np.float32)})
        session.run({"input": np.zeros((2, 1, 8, 8), np.float32)})
        timings = session.op_profile()
    assert timings and all(t.calls == 2 for t in timings)
    assert any("conv2d" in t.op_type for t in timings)
    assert not any(t.name.startswith("vm.builtin") for t in timings)


def test_an_artifact_for_another_cpu_is_refused(
    built: Callable[..., Path], tmp_path: Path
) -> None:
    import shutil

    artifact = tmp_path / "copy.duh"
    shutil.copytree(built(DIGITS, "tvm:cpu"), artifact)
    path = artifact / "manifest.json"
    data = json.loads(path.read_text())
    data["host_requirements"]["cpu_flags"].append("avx10_2")
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="built for a CPU with avx10_2"):
        duh.load(artifact)


def test_int8_runs_the_qdq_model(built: Callable[..., Path], tmp_path: Path) -> None:
    out = tmp_path / "digits.int8.duh"
    result = build_model(DIGITS, "tvm:cpu-int8", out, calib=FIXTURES / "digits_calib.npz")
    assert result.manifest is not None and result.manifest.checks["passed"]
    assert any(p["name"] == "quantize" and p["changed"] for p in result.manifest.passes)
    data = np.load(FIXTURES / "digits_test.npz")
    with duh.load(out) as session:
        got = session.run({"input": data["input"]})["logits"].argmax(1)
    want = _reference(DIGITS, {"input": data["input"]})[0].argmax(1)
    assert float(np.mean(got == want)) >= 0.97


def test_a_real_model_with_a_dynamic_batch_says_to_fix_it(tmp_path: Path) -> None:
    magika = wheel_model("magika")
    with pytest.raises(TargetError, match=r"fix them with --shape bytes=1x2048"):
        build_model(magika, "tvm:cpu", tmp_path / "magika.duh")
    assert not (tmp_path / "magika.duh").exists()


def test_a_real_model_with_its_shape_fixed_matches_the_source(tmp_path: Path) -> None:
    magika = wheel_model("magika")
    out = tmp_path / "magika.duh"
    result = build_model(magika, "tvm:cpu", out, shapes={"bytes": (4, 2048)})
    assert result.manifest is not None and result.manifest.checks["passed"]
    rng = np.random.default_rng(7)
    feed = {"bytes": rng.integers(0, 257, (4, 2048)).astype(np.int32)}
    with duh.load(out) as session:
        got = session.run(feed)
    want = _reference(magika, feed)
    for value, expected in zip(got.values(), want, strict=True):
        np.testing.assert_allclose(value, expected, rtol=1e-4, atol=1e-5)
        assert (value.argmax(-1) == expected.argmax(-1)).all()


def test_unnamed_dynamic_dims_are_independent(tmp_path: Path) -> None:
    """paddle2onnx's [-1, 3, -1, -1]: batch, height and width may all differ."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, -1, -1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 4, -1, -1])
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    conv = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    graph = helper.make_graph([conv], "g", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "paddle_conv.onnx")
    out = tmp_path / "conv.duh"
    result = build_model(tmp_path / "paddle_conv.onnx", "tvm:cpu", out)
    assert result.manifest is not None and result.manifest.checks["passed"]
    feed = {"x": rng.standard_normal((2, 3, 5, 7)).astype(np.float32)}
    with duh.load(out) as session:
        got = session.run(feed)["y"]
    np.testing.assert_allclose(
        got, _reference(tmp_path / "paddle_conv.onnx", feed)[0], rtol=1e-4, atol=1e-4
    )


# --- tuning ------------------------------------------------------------------------------------


@pytest.mark.slow  # three MetaSchedule tunings: ~4 minutes on 2 cores
def test_tuning_records_are_cached_and_reused(conv_model: Path, tmp_path: Path) -> None:
    # cache=False: the build cache would copy the first artifact instead of compiling again; the
    # tuning records are TVM's own cache, which the second compile must find.
    first = build_model(
        conv_model, "tvm:cpu", tmp_path / "a.duh", target_options={"tune_trials": "8"}, cache=False
    )
    assert first.manifest is not None
    tuning = first.manifest.engine_config["tuning"]
    assert tuning["trials"] == 8 and tuning["reused_cache"] is False and tuning["tasks"] >= 1
    records = cache_dir("tvm") / "tuning" / tuning["cache_key"]
    assert (records / "database_tuning_record.json").stat().st_size > 0
    second = build_model(
        conv_model, "tvm:cpu", tmp_path / "b.duh", target_options={"tune_trials": "8"}, cache=False
    )
    assert second.manifest is not None
    again = second.manifest.engine_config["tuning"]
    assert again["reused_cache"] is True and again["cache_key"] == tuning["cache_key"]
    assert any("reused cached tuning records" in n for n in second.manifest.build["compile_notes"])
    more = build_model(
        conv_model, "tvm:cpu", tmp_path / "c.duh", target_options={"tune_trials": "12"},
        cache=False,
    )  # fmt: skip
    assert more.manifest is not None
    resumed = more.manifest.engine_config["tuning"]
    assert resumed["trials"] == 12 and resumed["resumed_from"] == 8
    assert resumed["reused_cache"] is False and resumed["cache_key"] == tuning["cache_key"]
    assert any("resumed from 8 cached trials" in n for n in more.manifest.build["compile_notes"])
    feed = {"x": np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    with duh.load(tmp_path / "c.duh") as session:
        np.testing.assert_allclose(
            session.run(feed)["y"], _reference(conv_model, feed)[0], rtol=1e-4, atol=1e-4
        )
    with duh.load(tmp_path / "b.duh") as session:
        np.testing.assert_allclose(
            session.run(feed)["y"], _reference(conv_model, feed)[0], rtol=1e-4, atol=1e-4
        )


@pytest.mark.slow  # MetaSchedule's first tuning context imports every tensor intrinsic: minutes
def test_a_tuned_build_prepacks_its_weights_and_matches_the_source(
    conv_model: Path, tmp_path: Path
) -> None:
    # The default tuned route: kernels tuned with layout-free weights, the layouts they chose
    # folded into the constants at compile time; the artifact still takes the ONNX input alone.
    out = tmp_path / "prepacked.duh"
    result = build_model(conv_model, "tvm:cpu", out, target_options={"tune_trials": "4"})
    assert result.manifest is not None and result.manifest.checks["passed"] is True
    assert result.manifest.engine_config["tuning"]["weight_prepack"] is True
    assert any("weights prepacked" in n for n in result.manifest.build["compile_notes"])
    feed = {"x": np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    with duh.load(out) as session:
        assert [i.name for i in session.inputs] == ["x"]
        np.testing.assert_allclose(
            session.run(feed)["y"], _reference(conv_model, feed)[0], rtol=1e-4, atol=1e-4
        )


def test_weight_prepack_takes_true_or_false(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="weight_prepack='maybe': give true or false"):
        build_model(
            DIGITS, "tvm:cpu", tmp_path / "p.duh", target_options={"weight_prepack": "maybe"}
        )


def test_the_installed_tvm_ffi_can_tune() -> None:
    from duh.targets.tvm._tune import check_tvm_ffi

    check_tvm_ffi()  # apache-tvm-ffi 0.1.15 crashes apache-tvm 0.27's tuning: keep it pinned


def test_tuning_needs_fixed_shapes(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match=r"tuning needs fixed input shapes.*--shape input=1x1x8x8"):
        build_model(DIGITS, "tvm:cpu", tmp_path / "t.duh", target_options={"tune_trials": "4"})


def test_the_cli_takes_tune_trials(conv_model: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["build", str(conv_model), "-t", "tvm:cpu", "--tune-trials", "-3", "-o",
              str(tmp_path / "x.duh")]
    )
    assert result.exit_code == ConfigError.exit_code
    assert "--tune-trials -3 is negative" in result.output
