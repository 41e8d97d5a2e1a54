"""Small models (built with onnx.helper) and runners for the pass tests."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from duh.passes import PassContext

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def ctx(
    tmp_path: Path, engine: str = "onnxruntime", precision: str = "fp32", **kw: object
) -> PassContext:
    """A pass context for tests."""
    return PassContext(engine, "cpu", precision, tmp_path, **kw)  # type: ignore[arg-type]


def run_ort(model: onnx.ModelProto, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """All outputs of ``model`` on ONNX Runtime's CPU provider."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, dict(feed))


def run_ov(
    model: onnx.ModelProto, feed: Mapping[str, np.ndarray], tmp_path: Path
) -> list[np.ndarray]:
    """All outputs of ``model`` on OpenVINO's CPU plugin at f32."""
    import openvino as ov

    path = tmp_path / "ov_input.onnx"
    onnx.save_model(model, str(path))
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled(dict(feed))
    return [np.asarray(result[o]) for o in compiled.outputs]


def make_model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
    inits: list[onnx.TensorProto],
    opset: int = 17,
) -> onnx.ModelProto:
    """A checked model at ``opset`` with an IR version ONNX Runtime reads."""
    model = helper.make_model(
        helper.make_graph(nodes, "test", inputs, outputs, inits),
        opset_imports=[helper.make_opsetid("", opset)],
    )
    model.ir_version = 8 if opset <= 17 else 10
    onnx.checker.check_model(model)
    return model


def conv_bn_model(seed: int = 0) -> onnx.ModelProto:
    """Conv -> BatchNormalization -> Relu -> Conv(no bias) -> BatchNormalization -> GAP -> Flatten -> Gemm."""
    rng = np.random.default_rng(seed)

    def bn(prefix: str, c: int) -> list[onnx.TensorProto]:
        return [
            numpy_helper.from_array(
                (1 + 0.2 * rng.standard_normal(c)).astype(np.float32), f"{prefix}_s"
            ),
            numpy_helper.from_array(
                (0.1 * rng.standard_normal(c)).astype(np.float32), f"{prefix}_b"
            ),
            numpy_helper.from_array(
                (0.1 * rng.standard_normal(c)).astype(np.float32), f"{prefix}_m"
            ),
            numpy_helper.from_array((0.5 + rng.random(c)).astype(np.float32), f"{prefix}_v"),
        ]

    inits = [
        numpy_helper.from_array(
            (0.3 * rng.standard_normal((16, 3, 3, 3))).astype(np.float32), "w1"
        ),
        numpy_helper.from_array((0.1 * rng.standard_normal(16)).astype(np.float32), "b1"),
        numpy_helper.from_array(
            (0.2 * rng.standard_normal((32, 16, 3, 3))).astype(np.float32), "w2"
        ),
        numpy_helper.from_array((0.2 * rng.standard_normal((10, 32))).astype(np.float32), "fc_w"),
        numpy_helper.from_array(np.zeros(10, np.float32), "fc_b"),
        *bn("bn1", 16),
        *bn("bn2", 32),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node(
            "BatchNormalization", ["c1", "bn1_s", "bn1_b", "bn1_m", "bn1_v"], ["n1"], name="bn1"
        ),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node(
            "BatchNormalization", ["c2", "bn2_s", "bn2_b", "bn2_m", "bn2_v"], ["n2"], name="bn2"
        ),
        helper.make_node("Relu", ["n2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"], name="fc", transB=1),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])],
        inits,
    )


def mlp_block_model(opset: int = 17, seed: int = 0) -> onnx.ModelProto:
    """x[n,16] -> MatMul+Add -> written-out LayerNorm -> written-out Gelu (erf) -> MatMul+Add."""
    rng = np.random.default_rng(seed)
    consts = {
        "w1": (0.3 * rng.standard_normal((16, 32))).astype(np.float32),
        "b1": (0.1 * rng.standard_normal(32)).astype(np.float32),
        "gamma": (1 + 0.1 * rng.standard_normal(32)).astype(np.float32),
        "beta": (0.1 * rng.standard_normal(32)).astype(np.float32),
        "w2": (0.3 * rng.standard_normal((32, 8))).astype(np.float32),
        "b2": (0.1 * rng.standard_normal(8)).astype(np.float32),
        "two": np.array(2.0, np.float32),
        "eps": np.array(1e-5, np.float32),
        "sqrt2": np.array(math.sqrt(2.0), np.float32),
        "one": np.array(1.0, np.float32),
        "half": np.array(0.5, np.float32),
    }
    axes: dict[str, object] = {"axes": [-1]} if opset < 18 else {}
    axes_in = [] if opset < 18 else ["axes"]
    if opset >= 18:
        consts["axes"] = np.array([-1], np.int64)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["mm1"], name="mm1"),
        helper.make_node("Add", ["mm1", "b1"], ["h"], name="add1"),
        helper.make_node("ReduceMean", ["h", *axes_in], ["mean"], name="mean", **axes),
        helper.make_node("Sub", ["h", "mean"], ["d"], name="sub"),
        helper.make_node("Pow", ["d", "two"], ["sq"], name="pow"),
        helper.make_node("ReduceMean", ["sq", *axes_in], ["var"], name="var", **axes),
        helper.make_node("Add", ["var", "eps"], ["ve"], name="add_eps"),
        helper.make_node("Sqrt", ["ve"], ["std"], name="sqrt"),
        helper.make_node("Div", ["d", "std"], ["norm"], name="div"),
        helper.make_node("Mul", ["norm", "gamma"], ["scaled"], name="mul_gamma"),
        helper.make_node("Add", ["scaled", "beta"], ["ln"], name="add_beta"),
        helper.make_node("Div", ["ln", "sqrt2"], ["g0"], name="g_div"),
        helper.make_node("Erf", ["g0"], ["g1"], name="g_erf"),
        helper.make_node("Add", ["g1", "one"], ["g2"], name="g_add"),
        helper.make_node("Mul", ["ln", "g2"], ["g3"], name="g_mul"),
        helper.make_node("Mul", ["g3", "half"], ["g"], name="g_half"),
        helper.make_node("MatMul", ["g", "w2"], ["mm2"], name="mm2"),
        helper.make_node("Add", ["mm2", "b2"], ["y"], name="add2"),
    ]
    inits = [numpy_helper.from_array(v, k) for k, v in consts.items()]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])],
        inits,
        opset,
    )


def paddle_like_model(seed: int = 0) -> onnx.ModelProto:
    """Weights in Constant nodes (as Paddle exports them) and a Shape->Gather->Concat->Reshape."""
    rng = np.random.default_rng(seed)
    w = (0.3 * rng.standard_normal((4, 3, 3, 3))).astype(np.float32)
    b = (0.1 * rng.standard_normal(4)).astype(np.float32)
    scale = np.array([2.0], np.float32)
    nodes = [
        helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w)),
        helper.make_node("Constant", [], ["b"], value=numpy_helper.from_array(b)),
        helper.make_node("Constant", [], ["s0"], value=numpy_helper.from_array(scale)),
        helper.make_node("Constant", [], ["s1"], value_float=0.5),
        helper.make_node("Mul", ["s0", "s1"], ["s"]),  # constant arithmetic: 2 * 0.5
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["c", "s"], ["cs"]),
        helper.make_node("Shape", ["cs"], ["shape"]),
        helper.make_node("Constant", [], ["i0"], value_ints=[0]),
        helper.make_node("Gather", ["shape", "i0"], ["batch"], axis=0),
        helper.make_node("Constant", [], ["rest"], value_ints=[-1]),
        helper.make_node("Concat", ["batch", "rest"], ["target"], axis=0),
        helper.make_node("Reshape", ["cs", "target"], ["y"]),
    ]
    return make_model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "m"])],
        [],
    )
