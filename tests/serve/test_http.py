"""The HTTP endpoint against the stock tritonclient and raw requests."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from fixtures.serve_models import reference
from tests.serve.conftest import ServerProcess

X = np.random.default_rng(7).standard_normal((3, 256)).astype(np.float32)


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.address)


def test_health_and_metadata(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("light") and client.is_model_ready("light", "1")
    assert not client.is_model_ready("nope")
    meta = client.get_server_metadata()
    assert meta["name"] == "duh" and "binary_tensor_data" in meta["extensions"]
    model = client.get_model_metadata("light")
    assert model["versions"] == ["1"]
    assert model["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 256]}]
    assert model["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 10]}]


def test_config_has_what_perf_analyzer_reads(client: httpclient.InferenceServerClient) -> None:
    config = client.get_model_config("light")
    assert config["max_batch_size"] == 32
    assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [256]}]
    assert config["output"] == [{"name": "y", "data_type": "TYPE_FP32", "dims": [10]}]
    assert config["instance_group"] == [{"name": "light", "kind": "KIND_CPU", "count": 1}]
    fixed = client.get_model_config("fixed")
    assert fixed["max_batch_size"] == 0 and fixed["input"][0]["dims"] == [2, 3]


@pytest.mark.parametrize("binary", [True, False, None])
def test_infer_binary_json_and_default(client: httpclient.InferenceServerClient,
                                       binary: bool | None) -> None:
    tensor = httpclient.InferInput("x", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X, binary_data=bool(binary) if binary is not None else True)
    outputs = None if binary is None else [httpclient.InferRequestedOutput("y", binary_data=binary)]
    result = client.infer("light", [tensor], outputs=outputs, request_id="abc")
    assert result.get_response()["id"] == "abc"
    assert result.get_response()["model_version"] == "1"
    np.testing.assert_allclose(result.as_numpy("y"), reference("light", X), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("binary", [True, False])
def test_fp16_and_bytes_tensors(client: httpclient.InferenceServerClient, binary: bool) -> None:
    half = np.array([[0.5, 1.5, -2.0, 65000.0]], dtype=np.float16)
    tensor = httpclient.InferInput("x", [1, 4], "FP16")
    tensor.set_data_from_numpy(half, binary_data=binary)
    out = client.infer("half", [tensor], outputs=[
        httpclient.InferRequestedOutput("y", binary_data=binary)]).as_numpy("y")
    assert out.dtype == np.float16
    np.testing.assert_array_equal(out, half + np.float16(1))
    words = np.array(["hello", "wörld", ""], dtype=object)
    tensor = httpclient.InferInput("s", [3], "BYTES")
    tensor.set_data_from_numpy(words, binary_data=binary)
    out = client.infer("strings", [tensor], outputs=[
        httpclient.InferRequestedOutput("t", binary_data=binary)]).as_numpy("t")
    assert [v.decode() if isinstance(v, bytes) else v for v in out] == list(words)


def test_model_without_batch_dim(client: httpclient.InferenceServerClient) -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    tensor = httpclient.InferInput("x", [2, 3], "FP32")
    tensor.set_data_from_numpy(x)
    np.testing.assert_array_equal(client.infer("fixed", [tensor]).as_numpy("y"), 2 * x)


def _infer_doc(name: str = "x", datatype: str = "FP32", shape: list | None = None,
               data: object = None) -> dict:
    shape = [1, 256] if shape is None else shape
    data = [0.5] * 256 if data is None else data
    return {"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}]}


@pytest.mark.parametrize(
    ("path", "doc", "status", "message"),
    [
        ("/v2/models/light/infer", _infer_doc(name="z"), 400, "unknown input 'z'"),
        ("/v2/models/light/infer", _infer_doc(datatype="FP64"), 400,
         "input 'x' has datatype FP64, expected FP32"),
        ("/v2/models/light/infer", _infer_doc(shape=[1, 128], data=[0.5] * 128), 400,
         "axis 1 must be 256"),
        ("/v2/models/light/infer", _infer_doc(shape=[256], data=[0.5] * 256), 400, "rank 2"),
        ("/v2/models/light/infer", _infer_doc(shape=[2, 256]), 400,
         "has 256 data elements but shape \\[2, 256\\] needs 512"),
        ("/v2/models/light/infer", {**_infer_doc(), "outputs": [{"name": "q"}]}, 400,
         "unknown output 'q'"),
        ("/v2/models/nope/infer", _infer_doc(), 404, "unknown model 'nope'; served models: "),
        ("/v2/models/light/versions/9/infer", _infer_doc(), 404, "has no version '9'"),
        ("/v2/models/heavy/infer", {**_infer_doc(), "parameters": {"timeout": 1}}, 503,
         "timeout"),
    ],
)
def test_bad_requests_get_a_clear_error(server: ServerProcess, path: str, doc: dict,
                                        status: int, message: str) -> None:
    got, body = server.post_json(path, doc)
    assert got == status, body
    assert set(body) == {"error"}
    assert re.search(message, body["error"]), body["error"]


def test_malformed_lying_and_oversized_bodies(server: ServerProcess) -> None:
    status, _, body = server.request("POST", "/v2/models/light/infer", b'{"inputs": [')
    assert status == 400 and "not valid JSON" in json.loads(body)["error"]
    head = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 256],
                                   "parameters": {"binary_data_size": 1024}}]}).encode()
    raw = np.zeros(256, dtype=np.float32).tobytes()
    for header, payload, text in [
        (str(len(head) + 5000), head + raw, "Inference-Header-Content-Length is"),
        (str(len(head)), head + raw[:1000], "only 1000 bytes of binary data remain"),
        (str(len(head)), head + raw + b"\0" * 8, "8 bytes of binary data beyond"),
        (str(len(head) - 3), head + raw, "not valid JSON"),
    ]:
        status, _, body = server.request(
            "POST", "/v2/models/light/infer", payload,
            {"Inference-Header-Content-Length": header})
        assert status == 400, body
        assert text in json.loads(body)["error"]
    status, _, body = server.request("POST", "/v2/models/light/infer", b"0" * (2 << 20))
    assert status == 413 and "limit of 1048576 bytes" in json.loads(body)["error"]
    status, _, body = server.request("GET", "/v2/nothing/here")
    assert status == 404 and "error" in json.loads(body)
    assert server.request("GET", "/v2/health/live")[0] == 200


def test_tritonclient_sees_errors_as_exceptions(client: httpclient.InferenceServerClient) -> None:
    tensor = httpclient.InferInput("x", [1, 3], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException, match="axis 1 must be 256") as info:
        client.infer("light", [tensor])
    assert info.value.status() == "400"


def test_stats_metrics_and_access_log(server: ServerProcess,
                                      client: httpclient.InferenceServerClient) -> None:
    tensor = httpclient.InferInput("x", [2, 256], "FP32")
    tensor.set_data_from_numpy(X[:2])
    before = client.get_inference_statistics("light")["model_stats"][0]
    client.infer("light", [tensor])
    after = client.get_inference_statistics("light")["model_stats"][0]
    assert after["inference_stats"]["success"]["count"] == before["inference_stats"]["success"][
        "count"] + 1
    assert after["inference_count"] == before["inference_count"] + 2
    server.post_json("/v2/models/light/infer", _infer_doc(name="z"))
    status, headers, body = server.request("GET", "/metrics")
    text = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert 'duh_inference_request_success_total{model="light",version="1"}' in text
    assert 'duh_inference_request_failure_total{model="light",reason="bad_request",version="1"}' \
        in text
    for name in ("duh_inference_queue_duration_seconds_bucket",
                 "duh_inference_compute_infer_duration_seconds_bucket",
                 "duh_inference_request_duration_seconds_bucket",
                 "duh_inference_batch_size_bucket", "duh_inference_pending_request_count"):
        assert f'{name}{{' in text, name
    lines = [json.loads(line) for line in server.stdout if line.startswith("{")]
    infers = [r for r in lines if r["path"] == "/v2/models/light/infer"]
    assert any(r["status"] == 200 and r["model"] == "light" and r["version"] == "1"
               for r in infers)
    assert any(r["status"] == 400 and r["error"] == "bad_request" for r in infers)


def test_request_larger_than_max_batch_is_split_and_joined(
    client: httpclient.InferenceServerClient,
) -> None:
    x = np.random.default_rng(9).standard_normal((70, 256)).astype(np.float32)  # limit is 32
    tensor = httpclient.InferInput("x", [70, 256], "FP32")
    tensor.set_data_from_numpy(x)
    out = client.infer("light", [tensor]).as_numpy("y")
    assert out.shape == (70, 10)
    np.testing.assert_allclose(out, reference("light", x), rtol=1e-4, atol=1e-5)


def test_unequal_free_dims_are_answered_each_with_their_own_rows(server: ServerProcess) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def one(k: int) -> None:
        x = np.arange(2 * k, dtype=np.float32).reshape(2, k)
        status, body = server.post_json("/v2/models/scale/infer", {"inputs": [
            {"name": "x", "datatype": "FP32", "shape": [2, k], "data": x.ravel().tolist()}]})
        assert status == 200, body
        assert body["outputs"][0]["shape"] == [2, k]
        np.testing.assert_array_equal(body["outputs"][0]["data"], (2 * x).ravel())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, [1 + i % 5 for i in range(80)]))
