"""Fixtures for duh bench: real artifacts, quick settings, and Open Inference Protocol servers.

The in-process OIP server is a small aiohttp app backed by a real ``duh.load`` session (JSON and
Triton's binary extension, model statistics, and a switch that answers 503 to test rejection);
``duh serve`` itself is started as a subprocess on a free port when it is installed.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from duh.bench import BenchSettings, Warmup
from duh.bench._http import OIP_DATATYPES
from tests.serve.conftest import ServerProcess

_TO_OIP = {v: k for k, v in OIP_DATATYPES.items()}


def quick_settings(**changes: Any) -> BenchSettings:
    """Settings for tests: tiny windows, a few warm-up runs, no memory child process."""
    base: dict[str, Any] = {
        "window_s": 0.05,
        "min_windows": 2,
        "max_windows": 3,
        "warmup": Warmup(runs=3, seconds=0.0),
        "memory": False,
        "batches": (1, 4),
        "streams": (2,),
    }
    base.update(changes)
    return BenchSettings(**base)


@pytest.fixture(scope="session")
def digits_ort(built: Callable[..., Path]) -> Path:
    """The digits CNN built for ONNX Runtime FP32."""
    return built("digits_cnn.onnx", "onnxruntime:cpu-fp32")


@pytest.fixture(scope="session")
def digits_ov(built: Callable[..., Path]) -> Path:
    """The digits CNN built for OpenVINO FP32 (skipped where OpenVINO is missing)."""
    pytest.importorskip("openvino", reason="openvino is not installed")
    return built("digits_cnn.onnx", "openvino:cpu-fp32")


@pytest.fixture(scope="session")
def fixed_batch_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """x float32 [1, 4] -> y = relu(x): a model whose batch axis is fixed."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "fixed", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("models") / "fixed.onnx"
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def dynamic_conv_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """x float32 [1, 1, h, w] -> a 3x3 convolution without padding: h and w must be >= 3."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, "h", "w"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, None, None])
    weight = helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 3, 3], [1.0] * 9)
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "conv", [x], [y],
                              [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("models") / "conv.onnx"
    onnx.save(model, str(path))
    return path


class OipServer:
    """A minimal OIP HTTP server over one real session, in a background thread on 127.0.0.1."""

    def __init__(self, artifact: Path, model: str = "digits") -> None:
        from aiohttp import web

        import duh

        self.session = duh.load(artifact)
        self.model = model
        self.reject = False
        self.requests = 0
        self.binary_requests = 0
        self._loop = asyncio.new_event_loop()
        app = web.Application()
        base = f"/v2/models/{model}"
        app.router.add_get("/v2/health/ready", self._ready)
        app.router.add_get(base, self._metadata)
        app.router.add_get(base + "/stats", self._stats)
        app.router.add_post(base + "/infer", self._infer)
        self._runner = web.AppRunner(app)
        self._stats_doc = {"success": [0, 0], "queue": [0, 0], "compute_infer": [0, 0]}
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            self._loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        assert started.wait(30), "the test OIP server did not start"
        self.url = f"http://127.0.0.1:{self.port}"

    async def _ready(self, request: Any) -> Any:
        from aiohttp import web

        return web.json_response({})

    async def _metadata(self, request: Any) -> Any:
        from aiohttp import web

        def spec(s: Any) -> dict[str, Any]:
            shape = [d if isinstance(d, int) else -1 for d in s.shape]
            return {"name": s.name, "datatype": _TO_OIP[s.dtype], "shape": shape}

        return web.json_response({
            "name": self.model, "versions": ["1"], "platform": "test_onnxruntime",
            "inputs": [spec(s) for s in self.session.inputs],
            "outputs": [spec(s) for s in self.session.outputs],
        })

    async def _stats(self, request: Any) -> Any:
        from aiohttp import web

        stats = {k: {"count": c, "ns": ns} for k, (c, ns) in self._stats_doc.items()}
        return web.json_response({"model_stats": [{
            "name": self.model, "version": "1", "inference_count": self.requests,
            "execution_count": self.requests, "inference_stats": stats,
        }]})

    async def _infer(self, request: Any) -> Any:
        from aiohttp import web

        body = await request.read()
        if self.reject:
            return web.json_response({"error": "queue full"}, status=503)
        header_length = request.headers.get("Inference-Header-Content-Length")
        started = time.perf_counter_ns()
        feed = _decode_request(body, header_length)
        outputs = self.session.run(feed)
        took = time.perf_counter_ns() - started
        self.requests += 1
        for key in self._stats_doc:
            self._stats_doc[key][0] += 1
            self._stats_doc[key][1] += took if key != "queue" else 1000
        if header_length is None:
            doc = {"model_name": self.model, "outputs": [
                {"name": k, "datatype": _TO_OIP[v.dtype.name], "shape": list(v.shape),
                 "data": v.ravel().tolist()} for k, v in outputs.items()]}
            return web.json_response(doc)
        self.binary_requests += 1
        blobs = [np.ascontiguousarray(v).tobytes() for v in outputs.values()]
        header = json.dumps({"model_name": self.model, "outputs": [
            {"name": k, "datatype": _TO_OIP[v.dtype.name], "shape": list(v.shape),
             "parameters": {"binary_data_size": len(b)}}
            for (k, v), b in zip(outputs.items(), blobs, strict=True)]}).encode()
        return web.Response(body=header + b"".join(blobs),
                            headers={"Inference-Header-Content-Length": str(len(header)),
                                     "Content-Type": "application/octet-stream"})

    def stop(self) -> None:
        """Shut the server down and join its thread."""
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self.session.close()


def _decode_request(body: bytes, header_length: str | None) -> dict[str, np.ndarray]:
    size = int(header_length) if header_length else len(body)
    doc = json.loads(body[:size])
    feed: dict[str, np.ndarray] = {}
    offset = size
    for item in doc["inputs"]:
        dtype = OIP_DATATYPES[item["datatype"]]
        nbytes = item.get("parameters", {}).get("binary_data_size")
        if nbytes is not None:
            raw = body[offset : offset + int(nbytes)]
            offset += int(nbytes)
            feed[item["name"]] = np.frombuffer(raw, dtype=dtype).reshape(item["shape"])
        else:
            feed[item["name"]] = np.asarray(item["data"], dtype=dtype).reshape(item["shape"])
    return feed


@pytest.fixture
def oip_server(digits_ort: Path) -> Iterator[OipServer]:
    """The test OIP server over the digits artifact, stopped after the test."""
    pytest.importorskip("aiohttp", reason="aiohttp is not installed")
    server = OipServer(digits_ort)
    yield server
    server.stop()


@pytest.fixture
def duh_serve(digits_ort: Path) -> Iterator[str]:
    """``duh serve`` on a free 127.0.0.1 port serving the digits artifact; yields its URL."""
    pytest.importorskip("aiohttp", reason="aiohttp is not installed")
    server = ServerProcess([f"digits={digits_ort}", "--host", "127.0.0.1"])
    try:
        yield server.url
    finally:
        server.stop()


def load_json(path: Path) -> Any:
    """Read a JSON file."""
    return json.loads(path.read_text(encoding="utf-8"))

