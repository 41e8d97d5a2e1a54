"""The gRPC endpoint (inference.GRPCInferenceService) against the stock tritonclient."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from fixtures.serve_models import reference
from tests.serve.conftest import ServerProcess


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> grpcclient.InferenceServerClient:
    assert server.grpc is not None
    return grpcclient.InferenceServerClient(server.grpc)


def test_health_and_metadata(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("heavy") and not client.is_model_ready("nope")
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "duh" and "statistics" in meta["extensions"]
    model = client.get_model_metadata("heavy", as_json=True)
    assert model["versions"] == ["1"] and model["platform"] == "onnxruntime_onnx"
    assert model["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "256"]}]
    config = client.get_model_config("heavy", as_json=True)["config"]
    assert config["max_batch_size"] == 32 and config["input"][0]["dims"] == ["256"]


def test_infer_matches_the_reference(client: grpcclient.InferenceServerClient) -> None:
    x = np.random.default_rng(3).standard_normal((4, 256)).astype(np.float32)
    tensor = grpcclient.InferInput("x", [4, 256], "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("heavy", [tensor], request_id="g1",
                          outputs=[grpcclient.InferRequestedOutput("y")])
    assert result.get_response().id == "g1"
    assert result.get_response().model_version == "1"
    np.testing.assert_allclose(result.as_numpy("y"), reference("heavy", x), rtol=1e-4, atol=1e-5)


def test_fp16_and_bytes(client: grpcclient.InferenceServerClient) -> None:
    half = np.array([[1.0, 2.5, -3.0, 0.0]], dtype=np.float16)
    tensor = grpcclient.InferInput("x", [1, 4], "FP16")
    tensor.set_data_from_numpy(half)
    np.testing.assert_array_equal(client.infer("half", [tensor]).as_numpy("y"), half + 1)
    words = np.array([b"a", b"bcd"], dtype=object)
    tensor = grpcclient.InferInput("s", [2], "BYTES")
    tensor.set_data_from_numpy(words)
    assert list(client.infer("strings", [tensor]).as_numpy("t")) == list(words)


def test_errors_carry_status_codes(client: grpcclient.InferenceServerClient) -> None:
    tensor = grpcclient.InferInput("x", [1, 3], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException, match="axis 1 must be 256") as info:
        client.infer("heavy", [tensor])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException, match="unknown model 'nope'") as info:
        client.infer("nope", [tensor])
    assert info.value.status() == "StatusCode.NOT_FOUND"
    stats = client.get_inference_statistics("heavy", as_json=True)["model_stats"][0]
    assert int(stats["inference_stats"]["fail"]["count"]) >= 1
