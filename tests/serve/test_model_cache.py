"""The memory-aware model cache: three real models under a budget that holds two."""

from __future__ import annotations

import functools
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from duh.errors import ConfigError
from duh.serve import MemoryConfig, parse_size
from duh.serve._modelcache import Residency
from tests.serve.conftest import ServerProcess

WIDTH = 16384  # 16 MiB of weights per model: far more than the engine library's own memory
NAMES = ("m0", "m1", "m2")
X = np.random.default_rng(5).standard_normal((8, 256)).astype(np.float32)


def _weights(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(100 + seed)
    w = (rng.standard_normal((256, WIDTH)) * 0.06).astype(np.float32)
    v = (rng.standard_normal((WIDTH, 4)) * 0.01).astype(np.float32)
    return w, v


@functools.cache
def _answers(seed: int) -> np.ndarray:
    """The model's output for every row of X (numpy, float64)."""
    w, v = _weights(seed)
    return (X.astype(np.float64) @ w @ v).astype(np.float32)


def _reference(seed: int, row: int) -> np.ndarray:
    return _answers(seed)[row % len(X)]


@pytest.fixture(scope="module")
def repo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """m0, m1, m2: y = x @ W @ V with their own weights, as plain .onnx in a repository."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    root = tmp_path_factory.mktemp("cache-repo")
    for seed, name in enumerate(NAMES):
        w, v = _weights(seed)
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("MatMul", ["h", "v"], ["y"])],
            name,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 256])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
            [numpy_helper.from_array(w, "w"), numpy_helper.from_array(v, "v")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 9
        (root / name / "1").mkdir(parents=True)
        onnx.save(model, str(root / name / "1" / "model.onnx"))
    return root


def _metrics(server: ServerProcess) -> dict[str, float]:
    text = server.request("GET", "/metrics")[2].decode()
    return {m[1]: float(m[2]) for m in re.finditer(r"^(duh_model_\S+) (\S+)$", text, re.M)}


def _infer(server: ServerProcess, name: str, i: int) -> tuple[str, int, int, dict]:
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 256],
                       "data": X[i % len(X)].tolist()}]}
    status, body = server.post_json(f"/v2/models/{name}/infer", doc)
    return name, i, status, body


def test_three_models_under_a_budget_of_two_evict_and_reload(start_server, repo_dir) -> None:
    # Each model's resident size as the cache measures it (the engine library's own memory,
    # brought in by the first load, is charged to none of them).
    probe = start_server("--repository", repo_dir, "--memory-budget", "64G", "--preload")
    sizes = [_metrics(probe)[f'duh_model_resident_bytes{{model="{n}"}}'] for n in NAMES]
    assert probe.stop() == 0
    assert all(s >= WIDTH * 256 * 4 for s in sizes), sizes  # at least the weights
    assert max(sizes) < 2 * min(sizes), sizes
    small, *large = sorted(sizes)
    budget = int(sum(large) + 0.5 * small)  # any two fit, three do not

    server = start_server("--repository", repo_dir, "--memory-budget", str(budget),
                          "--preload", "--pin", "m0", "--model-control", "explicit")
    before = _metrics(server)
    preloaded = [before.get(f'duh_model_resident_bytes{{model="{n}"}}', 0) for n in NAMES]
    assert preloaded[0] > 0 and sum(preloaded) <= budget, (preloaded, budget)
    assert server.request("GET", "/v2/health/ready")[0] == 200

    # three callers, one per model, interleaved: m1 and m2 take turns beside the pinned m0
    order = [(NAMES[i % 3], i) for i in range(90)]
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda job: _infer(server, *job), order))
    for name, i, status, body in results:
        assert status == 200, body
        assert body["model_name"] == name
        np.testing.assert_allclose(body["outputs"][0]["data"],
                                   _reference(NAMES.index(name), i),
                                   rtol=1e-3, atol=1e-4)
    after = _metrics(server)
    assert after.get('duh_model_evictions_total{model="m0"}', 0) == 0  # pinned
    evictions = sum(after.get(f'duh_model_evictions_total{{model="{n}"}}', 0) for n in NAMES)
    loads = sum(after[f'duh_model_loads_total{{model="{n}"}}'] for n in NAMES)
    assert evictions >= 1 and loads >= 3 + evictions - 1, after
    resident = [after.get(f'duh_model_resident_bytes{{model="{n}"}}', 0) for n in NAMES]
    assert sum(resident) <= budget and resident[0] > 0
    assert sum(1 for r in resident if r > 0) == 2
    assert after["duh_model_memory_budget_bytes"] == budget
    assert after['duh_model_load_duration_seconds_count{model="m2"}'] >= 1

    # the load/unload API still rules: an unloaded model is not brought back by requests
    assert server.post_json("/v2/repository/models/m1/unload", {})[0] in (200, 404)
    status, body = _infer(server, "m1", 0)[2:]
    if after['duh_model_resident_bytes{model="m1"}'] > 0:
        assert status == 404 and "unloaded" in body["error"], body
    assert server.post_json("/v2/repository/models/m1/load", {})[0] == 200
    name, i, status, body = _infer(server, "m1", 3)
    assert status == 200
    np.testing.assert_allclose(body["outputs"][0]["data"], _reference(1, 3),
                               rtol=1e-3, atol=1e-4)
    assert server.stop() == 0


def test_budget_options_are_checked(start_server, repo_dir) -> None:
    assert parse_size("8G") == 8 << 30 and parse_size("64MiB") == 64 << 20
    assert parse_size("1024") == 1024
    with pytest.raises(ConfigError, match="--memory-budget 'lots' is not a size"):
        parse_size("lots")
    with pytest.raises(ConfigError, match="--preload and --pin apply to --memory-budget"):
        MemoryConfig(pin=("m0",))
    with pytest.raises(RuntimeError, match="--pin names model 'nope', which is not served"):
        start_server("--repository", repo_dir, "--memory-budget", "1G", "--pin", "nope")
    with pytest.raises(RuntimeError, match="the pinned models do not fit --memory-budget"):
        start_server("--repository", repo_dir, "--memory-budget", "1M", "--pin", "m0")
    with pytest.raises(RuntimeError, match="--cache names model 'nope', which is not served"):
        start_server("--repository", repo_dir, "--cache", "nope:1M")


def test_requests_wait_for_a_load_up_to_the_queue_bound(start_server, repo_dir) -> None:
    server = start_server("--repository", repo_dir, "--memory-budget", "1G",
                          "--max-queue-size", "2")
    assert server.request("GET", "/v2/health/ready")[0] == 200  # nothing loaded, all loadable
    status, _, body = server.request("GET", "/v2/models/m1")
    assert status == 404 and b"loads on its first inference request" in body
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: _infer(server, "m1", i), range(8)))
    answered = [r for r in results if r[2] == 200]
    refused = [r for r in results if r[2] == 503]
    assert len(answered) >= 2 and len(refused) >= 1, [r[2] for r in results]
    assert len(answered) + len(refused) == 8
    for _, i, _, body in answered:
        np.testing.assert_allclose(body["outputs"][0]["data"], _reference(1, i), rtol=1e-3,
                                   atol=1e-4)
    for *_, body in refused:
        assert "is loading and 2 requests already wait for it" in body["error"]
    assert _metrics(server)['duh_model_loads_total{model="m1"}'] == 1
    assert server.stop() == 0


def test_victims_are_least_recently_used_idle_first() -> None:
    residency = Residency(MemoryConfig(budget_bytes=100, pin=("p",)))
    for name, size in (("p", 30), ("a", 30), ("b", 30)):
        residency.loaded(name, size)
    assert residency.victims(10, keep="c") == []  # 90 + 10 fits
    assert residency.victims(20, keep="c") == ["a"]  # a is the least recently used
    residency.acquire("a")  # a request in flight: b goes first although used later
    assert residency.victims(20, keep="c") == ["b"]
    assert residency.victims(50, keep="c") == ["b", "a"]  # then a, after its requests finish
    assert residency.victims(80, keep="c") is None  # the pinned model never goes
