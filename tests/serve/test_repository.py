"""Repository layout, versions, A/B splits, shadow traffic, and load/unload under traffic."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from fixtures.serve_models import reference
from tests.serve.conftest import ServerProcess

X = np.random.default_rng(11).standard_normal((16, 256)).astype(np.float32)


@pytest.fixture
def repo_dir(tmp_path: Path, serve_models: dict[str, Path]) -> Path:
    """light/1 is an artifact, light/2 holds one, light/3 holds a model.onnx; scale/1 too."""
    light = serve_models["light"]
    shutil.copytree(light, tmp_path / "light" / "1")
    shutil.copytree(light, tmp_path / "light" / "2" / "light.duh")
    (tmp_path / "light" / "3").mkdir()
    shutil.copy(light / "model.onnx", tmp_path / "light" / "3" / "model.onnx")
    (tmp_path / "scale" / "1").mkdir(parents=True)
    shutil.copy(serve_models["scale"], tmp_path / "scale" / "1" / "model.onnx")
    (tmp_path / "empty" / "1").mkdir(parents=True)  # holds nothing: skipped with a warning
    return tmp_path


def _infer(server: ServerProcess, path: str, i: int) -> tuple[int, dict]:
    doc = {"id": str(i), "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 256],
                                     "data": X[i % len(X)].tolist()}]}
    return server.post_json(path, doc)


def _check(status: int, body: dict, i: int) -> None:
    assert status == 200, body
    assert body["id"] == str(i)
    np.testing.assert_allclose(body["outputs"][0]["data"], reference("light", X[i % 16 : i % 16 + 1])
                               .ravel(), rtol=1e-4, atol=1e-5)


def _metric(server: ServerProcess, pattern: str) -> float:
    text = server.request("GET", "/metrics")[2].decode()
    match = re.search(re.escape(pattern) + r" ([\d.e+]+)", text)
    return float(match[1]) if match else 0.0


def test_versions_index_and_load_unload_under_traffic(start_server, repo_dir: Path) -> None:
    server = start_server("--repository", repo_dir, "--model-control", "explicit")
    assert "holds no artifact" in server.log()
    status, body = _infer(server, "/v2/models/light/infer", 0)
    _check(status, body, 0)
    assert body["model_version"] == "3"  # the highest version is the default
    status, body = _infer(server, "/v2/models/light/versions/1/infer", 1)
    _check(status, body, 1)
    assert body["model_version"] == "1"
    meta = json.loads(server.request("GET", "/v2/models/light")[2])
    assert meta["versions"] == ["1", "2", "3"]
    index = server.post_json("/v2/repository/index", {})[1]
    assert {(r["name"], r["version"], r["state"]) for r in index} == {
        ("light", "1", "READY"), ("light", "2", "READY"), ("light", "3", "READY"),
        ("scale", "1", "READY")}

    # reload light twice while 8 callers keep sending: every request is answered, correctly
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(_infer, server, "/v2/models/light/infer", i) for i in range(300)]
        for _ in range(2):
            assert server.post_json("/v2/repository/models/light/load", {})[0] == 200
        for i, future in enumerate(futures):
            _check(*future.result(), i)

    # unload while callers send: accepted requests finish (200), later ones get 404
    refused = threading.Event()  # set by the first caller answered 404

    def infer(i: int) -> tuple[int, dict]:
        status, body = _infer(server, "/v2/models/light/infer", i)
        if status == 404:
            refused.set()
        return status, body

    pool = ThreadPoolExecutor(8)
    futures = [pool.submit(infer, i) for i in range(3000)]
    futures[20].result(timeout=60)
    assert server.post_json("/v2/repository/models/light/unload", {})[0] == 200
    assert refused.wait(60), "no request was refused after the unload"
    pool.shutdown(cancel_futures=True)
    statuses = []
    for i, future in enumerate(futures):
        if future.cancelled():
            continue
        status, body = future.result()
        statuses.append(status)
        if status == 200:
            _check(status, body, i)
        else:
            assert status == 404 and "unknown model 'light'" in body["error"], body
    assert statuses.count(200) > 20 and statuses.count(404) > 0
    index = server.post_json("/v2/repository/index", {})[1]
    assert {r["state"] for r in index if r["name"] == "light"} == {"UNAVAILABLE"}
    assert server.post_json("/v2/repository/models/nope/load", {})[0] == 404
    assert server.post_json("/v2/repository/models/light/load", {})[0] == 200
    _check(*_infer(server, "/v2/models/light/infer", 5), 5)
    assert server.stop() == 0


def test_split_and_shadow_traffic(start_server, repo_dir: Path) -> None:
    server = start_server("--repository", repo_dir, "--split", "light:1=50,2=50",
                          "--shadow", "light:3")
    versions = []
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    for i in range(200):
        doc = {"id": str(i), "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 256],
                                         "data": X[i % 16].tolist()}]}
        conn.request("POST", "/v2/models/light/infer", json.dumps(doc))
        response = conn.getresponse()
        body = json.loads(response.read())
        _check(response.status, body, i)
        versions.append(body["model_version"])
    conn.close()
    assert versions.count("1") > 40 and versions.count("2") > 40 and "3" not in versions
    shadow = 'duh_inference_shadow_request_total{model="light",outcome="ok",version="3"}'
    deadline = time.monotonic() + 10
    while _metric(server, shadow) < 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _metric(server, shadow) == 200
    assert _metric(server, 'duh_inference_request_success_total{model="light",version="3"}') == 200
    assert server.stop() == 0


def test_split_naming_a_missing_version_stops_the_start(start_server, repo_dir: Path) -> None:
    with pytest.raises(RuntimeError, match="--split names version '7' of model light"):
        start_server("--repository", repo_dir, "--split", "light:1=50,7=50")
