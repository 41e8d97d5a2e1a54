"""Failover between instances: an engine call that raises or hangs replaces its instance.

The model fails for real: ``spin`` reshapes x[K] to [K/2, 2] (ONNX Runtime raises for an odd K)
and then adds 1 in a Loop of ``n`` steps (a huge ``n`` keeps the engine busy far past the
watchdog).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.serve.conftest import ServerProcess


@pytest.fixture(scope="module")
def spin_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    vi = helper.make_tensor_value_info
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["v_in", "one"], ["v_out"])],
        "step",
        [vi("i", TensorProto.INT64, []), vi("cond_in", TensorProto.BOOL, []),
         vi("v_in", TensorProto.FLOAT, None)],
        [vi("cond_out", TensorProto.BOOL, []), vi("v_out", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one")],
    )
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "pairs"], ["v"]),
         helper.make_node("Loop", ["n", "", "v"], ["y"], body=body)],
        "spin",
        [vi("x", TensorProto.FLOAT, ["K"]), vi("n", TensorProto.INT64, [])],
        [vi("y", TensorProto.FLOAT, ["P", 2])],
        [numpy_helper.from_array(np.array([-1, 2], dtype=np.int64), "pairs")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    path = tmp_path_factory.mktemp("spin") / "spin.onnx"
    onnx.save(model, str(path))
    return path


def _infer(server: ServerProcess, x: list[float], steps: int) -> tuple[int, dict]:
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [len(x)], "data": x},
                      {"name": "n", "datatype": "INT64", "shape": [], "data": [steps]}]}
    return server.post_json("/v2/models/spin/infer", doc)


def _restarts(server: ServerProcess, reason: str) -> float:
    text = server.request("GET", "/metrics")[2].decode()
    key = f'duh_instance_restarts_total{{model="spin",reason="{reason}",version="1"}} '
    for line in text.splitlines():
        if line.startswith(key):
            return float(line.split()[-1])
    return 0.0


def _wait_for(predicate, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _good(server: ServerProcess, i: int) -> None:
    status, body = _infer(server, [1.0, 2.0, 3.0, float(i)], 3)
    assert status == 200, body
    assert body["outputs"][0]["data"] == [4.0, 5.0, 6.0, i + 3.0]


def test_a_raising_and_a_hung_instance_are_replaced(start_server, spin_model: Path) -> None:
    server = start_server(f"spin={spin_model}", "--instances", "2", "--watchdog-s", "1")
    _good(server, 0)

    # an engine call that raises: its caller gets 500 with the engine's reason
    status, body = _infer(server, [1.0, 2.0, 3.0], 1)
    assert status == 500, body
    assert "onnxruntime failed to run the model" in body["error"]
    assert _wait_for(lambda: _restarts(server, "error") == 1)
    for i in range(6):
        _good(server, i)

    # a call that hangs: 500 after the watchdog, while the other instance serves everyone else
    with ThreadPoolExecutor(4) as pool:
        hung = pool.submit(_infer, server, [1.0, 2.0], 10**12)
        time.sleep(0.2)
        goods = [pool.submit(_good, server, i) for i in range(20)]
        for future in goods:
            future.result(timeout=30)
        status, body = hung.result(timeout=30)
    assert status == 500, body
    assert "ran past the watchdog's 1 s (--watchdog-s)" in body["error"]
    assert _wait_for(lambda: _restarts(server, "hang") == 1)
    ready = 'duh_instances_ready{model="spin",version="1"} 2.0'
    assert _wait_for(lambda: ready in server.request("GET", "/metrics")[2].decode())
    for i in range(8):  # both instances answer again
        _good(server, i)
    assert server.stop() == 0
