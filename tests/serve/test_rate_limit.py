"""Rate limits: a client over its token bucket gets 429 while others are served; model caps."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from duh.errors import ConfigError
from duh.serve import parse_concurrency, parse_rate_limit
from duh.serve._errors import RateLimitedError
from duh.serve._metrics import Metrics
from duh.serve._ratelimit import Limiter, Limits
from fixtures.serve_models import reference
from tests.serve.conftest import ServerProcess

X = np.random.default_rng(9).standard_normal((256, 256)).astype(np.float32)


def _infer(server: ServerProcess, model: str, rows: int = 1,
           key: str | None = None) -> tuple[int, dict[str, str], dict]:
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [rows, 256],
                       "data": X[:rows].ravel().tolist()}]}
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    status, head, body = server.request("POST", f"/v2/models/{model}/infer",
                                        json.dumps(doc).encode(), headers)
    return status, head, json.loads(body)


def test_a_client_over_its_rate_gets_429_and_others_are_served(start_server,
                                                               serve_models: dict[str, Path]):
    server = start_server(f"light={serve_models['light']}", "--rate-limit", "1/s,burst=3",
                          "--grpc-port", "0")
    noisy = [_infer(server, "light", key="noisy-client-key") for _ in range(8)]
    statuses = [status for status, _, _ in noisy]
    assert statuses[:3] == [200, 200, 200]
    refused = [(head, body) for status, head, body in noisy if status == 429]
    assert len(refused) >= 4, statuses
    head, body = refused[0]
    assert int(head["Retry-After"]) >= 1
    assert "--rate-limit" in body["error"]
    # another key, and a client known by its address only, have buckets of their own
    for key in ("quiet-client-key", None):
        for _ in range(3):
            status, _, body = _infer(server, "light", key=key)
            assert status == 200, body
            np.testing.assert_allclose(body["outputs"][0]["data"],
                                       reference("light", X[:1]).ravel(), rtol=1e-4, atol=1e-5)
    # gRPC clients are limited the same way (by metadata key, else by address)
    client = grpcclient.InferenceServerClient(server.grpc)
    tensor = grpcclient.InferInput("x", [1, 256], "FP32")
    tensor.set_data_from_numpy(X[:1])
    with pytest.raises(InferenceServerException, match="--rate-limit"):
        for _ in range(5):
            client.infer("light", [tensor], headers={"authorization": "Bearer noisy-client-key"})
    metrics = server.request("GET", "/metrics")[2].decode()
    assert 'duh_rate_limited_requests_total{limit="rate",model="light"}' in metrics
    assert server.stop() == 0


def test_a_model_over_its_concurrency_gets_429(start_server, serve_models: dict[str, Path]):
    server = start_server(f"heavy={serve_models['heavy']}", f"light={serve_models['light']}",
                          "--max-concurrency", "heavy:1")
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: _infer(server, "heavy", rows=64), range(18)))
    statuses = [status for status, _, _ in results]
    assert statuses.count(200) >= 1 and statuses.count(429) >= 1, statuses
    expected = reference("heavy", X[:64])
    for status, head, body in results:
        if status == 200:
            np.testing.assert_allclose(np.reshape(body["outputs"][0]["data"], (64, 10)),
                                       expected, rtol=1e-3, atol=1e-3)
        else:
            assert "--max-concurrency" in body["error"] and head["Retry-After"] == "1"
    # the other model has no cap
    with ThreadPoolExecutor(6) as pool:
        assert all(r[0] == 200 for r in pool.map(lambda _: _infer(server, "light"), range(18)))
    assert server.stop() == 0


def test_buckets_refill_at_the_rate() -> None:
    limiter = Limiter(Limits(rate=parse_rate_limit("2/s,burst=2")), Metrics().policy)
    limiter.take("a", "m", now=0.0)
    limiter.take("a", "m", now=0.0)
    with pytest.raises(RateLimitedError, match="retry after 1 s"):
        limiter.take("a", "m", now=0.1)
    limiter.take("a", "m", now=0.6)  # 0.5 s at 2/s brought one token back
    assert parse_rate_limit("600/m") == parse_rate_limit("10/s,burst=10")
    assert parse_concurrency("digits:4") == ("digits", 4)
    for bad in ("fast", "0/s", "10/h"):
        with pytest.raises(ConfigError, match="is not RATE/s"):
            parse_rate_limit(bad)
    with pytest.raises(ConfigError, match="is not NAME:N"):
        parse_concurrency("digits:0")
