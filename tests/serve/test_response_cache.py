"""The response cache: hits give the bytes a miss gave, never another version's or artifact's."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from duh.errors import ConfigError
from duh.serve import parse_cache
from fixtures.serve_models import reference
from tests.serve.conftest import ServerProcess

X = np.random.default_rng(3).standard_normal((12, 256)).astype(np.float32)


@pytest.fixture
def repo_dir(tmp_path: Path, serve_models: dict[str, Path]) -> Path:
    """m/1 is the light MLP, m/2 the heavy one (same signature, other weights); s/1 uncached."""
    shutil.copytree(serve_models["light"], tmp_path / "m" / "1")
    shutil.copytree(serve_models["heavy"], tmp_path / "m" / "2")
    shutil.copytree(serve_models["light"], tmp_path / "s" / "1")
    return tmp_path


def _body(row: int, binary: bool = True) -> bytes:
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 256],
                       "data": X[row].tolist()}],
           "parameters": {"binary_data_output": binary}}
    return json.dumps(doc).encode()


def _post(server: ServerProcess, path: str, row: int) -> tuple[int, bytes]:
    status, _, body = server.request("POST", path, _body(row),
                                     {"Content-Type": "application/json"})
    return status, body


def _output(body: bytes) -> np.ndarray:
    header = body.index(b"}]}") + 3
    return np.frombuffer(body[header:], dtype=np.float32)


def _metric(server: ServerProcess, name: str) -> float:
    text = server.request("GET", "/metrics")[2].decode()
    match = re.search(re.escape(name) + r" (\S+)", text)
    return float(match[1]) if match else 0.0


def test_hits_repeat_the_miss_and_never_cross_versions(start_server, repo_dir: Path,
                                                        serve_models: dict[str, Path]) -> None:
    server = start_server("--repository", repo_dir, "--cache", "m:1M", "--grpc-port", "0",
                          "--model-control", "explicit")
    miss = _post(server, "/v2/models/m/versions/1/infer", 0)
    hit = _post(server, "/v2/models/m/versions/1/infer", 0)
    assert miss[0] == hit[0] == 200
    assert hit[1] == miss[1]  # the same bytes
    np.testing.assert_allclose(_output(hit[1]), reference("light", X[:1]).ravel(), rtol=1e-4,
                               atol=1e-5)
    # the same input to version 2 is not answered from version 1's entry
    status, other = _post(server, "/v2/models/m/versions/2/infer", 0)
    assert status == 200
    np.testing.assert_allclose(_output(other), reference("heavy", X[:1]).ravel(), rtol=1e-3,
                               atol=1e-4)
    hits = 'duh_response_cache_hits_total{model="m",version="%s"}'
    misses = 'duh_response_cache_misses_total{model="m",version="%s"}'
    assert _metric(server, hits % "1") == 1 and _metric(server, misses % "1") == 1
    assert _metric(server, hits % "2") == 0 and _metric(server, misses % "2") == 1

    # Triton's config and statistics show it; an uncached model says so too
    config = json.loads(server.request("GET", "/v2/models/m/config")[2])
    assert config["response_cache"] == {"enable": True}
    assert json.loads(server.request("GET", "/v2/models/s/config")[2])["response_cache"] == {
        "enable": False}
    stats = json.loads(server.request("GET", "/v2/models/m/versions/1/stats")[2])
    inference = stats["model_stats"][0]["inference_stats"]
    assert inference["cache_hit"]["count"] == 1 and inference["cache_miss"]["count"] == 1

    # gRPC shares the cache: a hit, with the same numbers
    client = grpcclient.InferenceServerClient(server.grpc)
    grpc_config = client.get_model_config("m", as_json=True)["config"]
    assert grpc_config["response_cache"] == {"enable": True}
    tensor = grpcclient.InferInput("x", [1, 256], "FP32")
    tensor.set_data_from_numpy(X[:1])
    answers = [client.infer("m", [tensor], model_version="1").as_numpy("y") for _ in range(2)]
    np.testing.assert_array_equal(answers[0], answers[1])
    np.testing.assert_array_equal(answers[0].ravel(), _output(miss[1]))
    assert _metric(server, hits % "1") == 3

    # a rebuilt artifact under the same version (reloaded) never gets the old answers
    shutil.rmtree(repo_dir / "m" / "1")
    shutil.copytree(serve_models["heavy"], repo_dir / "m" / "1")
    assert server.post_json("/v2/repository/models/m/load", {})[0] == 200
    status, rebuilt = _post(server, "/v2/models/m/versions/1/infer", 0)
    assert status == 200 and rebuilt != miss[1]
    np.testing.assert_allclose(_output(rebuilt), reference("heavy", X[:1]).ravel(), rtol=1e-3,
                               atol=1e-4)
    assert _metric(server, misses % "1") == 2
    assert server.stop() == 0


def test_the_cache_keeps_within_its_bytes(start_server, repo_dir: Path) -> None:
    server = start_server("--repository", repo_dir, "--cache", "m:2K")
    for row in range(12):
        assert _post(server, "/v2/models/m/versions/1/infer", row)[0] == 200
    held = _metric(server, 'duh_response_cache_bytes{model="m"}')
    assert 0 < held <= 2048
    assert _metric(server, 'duh_response_cache_evictions_total{model="m"}') >= 4
    # the most recent answer is still there, the oldest is gone
    _post(server, "/v2/models/m/versions/1/infer", 11)
    _post(server, "/v2/models/m/versions/1/infer", 0)
    assert _metric(server, 'duh_response_cache_hits_total{model="m",version="1"}') == 1
    assert server.stop() == 0


def test_cache_option_is_checked() -> None:
    assert parse_cache("digits:64M") == ("digits", 64 << 20)
    with pytest.raises(ConfigError, match="--cache 'digits' is not NAME:SIZE"):
        parse_cache("digits")
