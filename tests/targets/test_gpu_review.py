"""Device-free checks of the NVIDIA paths: caches, provider fallbacks, extras, loggers, Q/DQ."""

from __future__ import annotations

import sys
import tomllib
import types
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from duh._cuda import NO_LIBCUDA, CudaDevice, bindings_mismatch, pick_devices
from duh.errors import TargetError
from duh.targets._gpu import check_qdq, misplaced_qdq, place_for_tensorrt, prepare_int8
from duh.targets.onnxruntime import _cuda as ort_cuda
from duh.targets.tensorrt import _build, _cuda_python_missing
from duh.targets.tensorrt._runtime import host_view

ROOT = Path(__file__).resolve().parents[2]


# 1. one engine cache per artifact -------------------------------------------------------------
def test_engine_cache_key_follows_the_weights(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.onnx", tmp_path / "b.onnx", tmp_path / "c.onnx"
    a.write_bytes(b"same graph, weights 1")
    b.write_bytes(b"same graph, weights 2")
    c.write_bytes(b"same graph, weights 1")
    assert ort_cuda.engine_cache_key([a]) != ort_cuda.engine_cache_key([b])
    cfg = {"provider": "tensorrt", "provider_options": {"device_id": "0"}}
    paths = {
        key: ort_cuda._providers({**cfg, "engine_cache_key": key})[0][1]["trt_engine_cache_path"]
        for key in (ort_cuda.engine_cache_key([a]), ort_cuda.engine_cache_key([b]))
    }
    assert len(set(paths.values())) == 2
    for key, path in paths.items():
        assert Path(path).name == key
    # the timing cache (kernel timings, not weights) stays shared
    timing = {ort_cuda._providers({**cfg, "engine_cache_key": k})[0][1]["trt_timing_cache_path"]
              for k in paths}
    assert len(timing) == 1


# 2. provider fallback -------------------------------------------------------------------------
def test_fallback_from_tensorrt_to_cuda_is_refused() -> None:
    with pytest.raises(TargetError, match="instead of TensorrtExecutionProvider"):
        ort_cuda.check_active("tensorrt", ["CUDAExecutionProvider", "CPUExecutionProvider"], "x")
    with pytest.raises(TargetError, match="instead of CUDAExecutionProvider"):
        ort_cuda.check_active("cuda", ["CPUExecutionProvider"], "x")
    ort_cuda.check_active("tensorrt", ["TensorrtExecutionProvider", "CUDAExecutionProvider"], "x")


def test_a_listed_but_broken_tensorrt_provider_is_not_chosen() -> None:
    listed = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert ort_cuda.choose_provider({}, listed, lambda: None) == "tensorrt"
    assert ort_cuda.choose_provider({}, listed, lambda: "libnvinfer.so.10: not found") == "cuda"
    with pytest.raises(TargetError, match="libnvinfer"):
        ort_cuda.choose_provider({"ep": "tensorrt"}, listed, lambda: "libnvinfer.so.10")
    assert ort_cuda.choose_provider({}, listed[1:], lambda: pytest.fail("probed")) == "cuda"


def test_the_probe_reports_why_on_a_cpu_onnxruntime() -> None:
    # This host's onnxruntime has no TensorRT provider: ORT falls back, and the probe says so.
    assert ort_cuda.probe_tensorrt(ort) is not None


# 3. extras and the driver check ---------------------------------------------------------------
def _extras() -> dict[str, list[str]]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return data["project"]["optional-dependencies"]


def test_gpu_extras_are_coherent_per_cuda_major() -> None:
    from packaging.requirements import Requirement

    extras = _extras()
    reqs = {
        extra: {r.name: r.specifier for r in map(Requirement, extras[extra])}
        for extra in ("gpu-cu12", "gpu-cu13")
    }
    cu12, cu13 = reqs["gpu-cu12"], reqs["gpu-cu13"]
    assert "13.0.0" not in cu12["cuda-python"] and "12.8.0" in cu12["cuda-python"]
    assert "11.0.0" not in cu12["tensorrt-cu12"] and "10.13.0" in cu12["tensorrt-cu12"]
    assert "13.0.0" in cu13["cuda-python"] and "12.9.0" not in cu13["cuda-python"]
    assert "11.4.0" in cu13["tensorrt-cu13"]
    assert extras["gpu"] == ["duh[gpu-cu12]"]
    assert not any("gpu" in e for e in extras["all"])


def test_bindings_newer_than_the_driver_are_named() -> None:
    why = bindings_mismatch("12.8", "13.0.1")
    assert why is not None and "CUDA 13 driver" in why and "gpu-cu12" in why
    assert bindings_mismatch("13.0", "12.9.0") is None
    assert bindings_mismatch("13.0", "13.0.1") is None
    assert bindings_mismatch(None, "13.0.1") is None


# 4. one logger --------------------------------------------------------------------------------
def _fake_trt() -> types.SimpleNamespace:
    class ILogger:
        Severity = types.SimpleNamespace(INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3)

        def __init__(self) -> None:
            pass

    return types.SimpleNamespace(
        ILogger=ILogger, NetworkDefinitionCreationFlag=types.SimpleNamespace()
    )


def test_one_logger_per_process_with_its_error_reset() -> None:
    trt = _fake_trt()
    first = _build.make_logger(trt)
    first.log(trt.ILogger.Severity.ERROR, "out of memory")
    assert first.last_error == "out of memory"
    second = _build.make_logger(trt)
    assert second is first and second.last_error == ""


# 11. strongly typed flag on TensorRT 10 and 11 ------------------------------------------------
@pytest.mark.parametrize(("value", "flags"), [(1, 2), (0, 0), (None, 0)])
def test_strongly_typed_flag(value: int | None, flags: int) -> None:
    trt = _fake_trt()
    if value is not None:
        trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED = value
    assert _build.network_flags(trt) == flags


# 7. fp32 is fp32 ------------------------------------------------------------------------------
def test_cuda_provider_fp32_turns_tf32_off() -> None:
    assert ort_cuda.provider_options("cuda", "fp32", 0, None, {})["use_tf32"] == "0"
    assert "use_tf32" not in ort_cuda.provider_options("cuda", "fp16", 0, None, {})
    trt = ort_cuda._providers({"provider": "tensorrt", "engine_cache_key": "k"})
    assert trt[1] == ("CUDAExecutionProvider", {"device_id": "0", "use_tf32": "0"})


# 9. detection order ---------------------------------------------------------------------------
def test_nvidia_smi_only_when_libcuda_cannot_load() -> None:
    gpu = CudaDevice(0, "H200", "9.0", "580.1", 140000)
    assert pick_devices([], NO_LIBCUDA, lambda: (gpu,)) == ([gpu], None)
    hidden = "the NVIDIA driver reports no CUDA device"  # CUDA_VISIBLE_DEVICES=""
    assert pick_devices([], hidden, lambda: pytest.fail("asked nvidia-smi")) == ([], hidden)
    assert pick_devices([], NO_LIBCUDA, lambda: ()) == ([], NO_LIBCUDA)


def test_a_foreign_cuda_namespace_is_not_cuda_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cuda").mkdir()  # a namespace package some other wheel provides
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "cuda" or m.startswith("cuda.")]:
        monkeypatch.delitem(sys.modules, name)
    try:
        assert _cuda_python_missing()
    finally:  # the fake namespace must not outlive the test (monkeypatch restores the real one)
        for name in [m for m in sys.modules if m == "cuda" or m.startswith("cuda.")]:
            del sys.modules[name]


# 10. pinned staging views ---------------------------------------------------------------------
def test_host_view_reads_and_writes_the_buffer() -> None:
    import ctypes

    raw = (ctypes.c_uint8 * 24)()
    view = host_view(ctypes.addressof(raw), (2, 3), np.dtype(np.float32))
    view[:] = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert np.frombuffer(bytes(raw), dtype=np.float32).tolist() == [0, 1, 2, 3, 4, 5]


# 6. Q/DQ placement on a ResNet block; 8. a QAT model -------------------------------------------
def _qdq(name: str, scale: float, nodes: list, inits: list) -> str:
    """Append Q -> DQ of activation ``name`` (per tensor, symmetric int8); return DQ's output."""
    s, z = f"{name}_s", f"{name}_z"
    inits += [numpy_helper.from_array(np.array(scale, np.float32), s),
              numpy_helper.from_array(np.array(0, np.int8), z)]
    nodes += [helper.make_node("QuantizeLinear", [name, s, z], [f"{name}_q"], name=f"Q_{name}"),
              helper.make_node("DequantizeLinear", [f"{name}_q", s, z], [f"{name}_dq"],
                               name=f"DQ_{name}")]
    return f"{name}_dq"


def _weight(name: str, w: np.ndarray, axis: int, nodes: list, inits: list, qat: bool) -> str:
    """A per-channel int8 weight: stored int8 -> DQ, or (QAT) float -> Q -> DQ."""
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    scale = (np.abs(w).max(axis=reduce) / 127).astype(np.float32)
    inits += [numpy_helper.from_array(scale, f"{name}_s"),
              numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{name}_z")]
    if qat:
        inits.append(numpy_helper.from_array(w.astype(np.float32), name))
        nodes.append(helper.make_node("QuantizeLinear", [name, f"{name}_s", f"{name}_z"],
                                      [f"{name}_q"], axis=axis, name=f"Q_{name}"))
    else:
        shape = [1] * w.ndim
        shape[axis] = -1
        q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
        inits.append(numpy_helper.from_array(q, f"{name}_q"))
    nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"],
                                  [f"{name}_dq"], axis=axis, name=f"DQ_{name}"))
    return f"{name}_dq"


def _resnet_block(qat: bool = False) -> onnx.ModelProto:
    """x -> Conv -> ReLU -> Conv -> Add(x) -> ReLU, with ORT's output-side Q/DQ everywhere."""
    rng = np.random.default_rng(0)
    nodes: list = []
    inits: list = []
    x = _qdq("x", 0.05, nodes, inits)
    w1 = _weight("w1", rng.normal(size=(8, 8, 3, 3)) * 0.1, 0, nodes, inits, qat)
    nodes.append(helper.make_node("Conv", [x, w1], ["c1"], pads=[1, 1, 1, 1], name="conv1"))
    nodes.append(helper.make_node("Relu", [_qdq("c1", 0.05, nodes, inits)], ["r1"], name="relu1"))
    w2 = _weight("w2", rng.normal(size=(8, 8, 3, 3)) * 0.1, 0, nodes, inits, qat)
    r1 = _qdq("r1", 0.05, nodes, inits)
    nodes.append(helper.make_node("Conv", [r1, w2], ["c2"], pads=[1, 1, 1, 1], name="conv2"))
    c2 = _qdq("c2", 0.05, nodes, inits)
    nodes.append(helper.make_node("Add", [c2, x], ["s"], name="add"))
    nodes.append(helper.make_node("Relu", [_qdq("s", 0.05, nodes, inits)], ["y"], name="relu2"))
    graph = helper.make_graph(
        nodes, "block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 6, 6])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _inputs_of(model: onnx.ModelProto, node_name: str) -> list[str]:
    return list(next(n for n in model.graph.node if n.name == node_name).input)


@pytest.mark.parametrize("qat", [False, True])
def test_tensorrt_placement_on_a_resnet_block(qat: bool) -> None:
    model = _resnet_block(qat)
    assert check_qdq(model) == []  # 8: valid either way, QAT weights included
    assert len(misplaced_qdq(model)) == 3  # ReLU, ReLU and the Conv side of the Add
    placed, rewired = place_for_tensorrt(model)
    assert rewired == 3
    assert check_qdq(placed) == [] and misplaced_qdq(placed) == []
    assert _inputs_of(placed, "relu1") == ["c1"]  # no Q/DQ around ReLU
    assert _inputs_of(placed, "relu2") == ["s"]
    assert _inputs_of(placed, "conv2")[0] == "r1_dq"  # Q/DQ on the weighted op's input
    assert _inputs_of(placed, "add") == ["c2", "x_dq"]  # the residual input only
    ops = [n.op_type for n in placed.graph.node]
    assert ops.count("QuantizeLinear") == (4 if qat else 2)
    # The rewired model still runs and stays close to the output-side one.
    feed = {"x": np.random.default_rng(1).normal(size=(1, 8, 6, 6)).astype(np.float32)}
    want, got = (
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        .run(None, feed)[0]
        for m in (model, placed)
    )
    assert np.abs(want - got).max() < 0.2 and np.abs(got).max() > 0.1
    out, notes = prepare_int8(model)
    assert misplaced_qdq(out) == [] and any("TensorRT placement: 3" in n for n in notes)


def test_qat_matmul_weight_is_accepted() -> None:
    """float weight -> Q -> DQ on a MatMul: the channel axis is the weight's last (rank 2)."""
    nodes: list = []
    inits: list = []
    x = _qdq("x", 0.05, nodes, inits)
    w = _weight("w", np.random.default_rng(2).normal(size=(16, 4)), 1, nodes, inits, qat=True)
    nodes.append(helper.make_node("MatMul", [x, w], ["y"], name="mm"))
    graph = helper.make_graph(
        nodes, "qat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert check_qdq(model) == []
