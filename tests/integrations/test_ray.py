"""Ray Serve and Ray Data on a local Ray instance (127.0.0.1): real replicas, real engines."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import duh
from duh.batch import BatchRequest, read_outputs, run_batch
from duh.errors import MissingDependencyError

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "fixtures" / "digits_cnn.onnx"


def test_without_ray_the_error_names_the_extra(tmp_path: Path) -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        from duh.integrations.ray import DeploymentConfig, deployment

        with pytest.raises(MissingDependencyError, match=r"duh\[ray\]"):
            deployment(DIGITS, DeploymentConfig(name="digits"))
        return
    pytest.skip("ray is installed here: the missing-extra path cannot run")


ray = pytest.importorskip("ray", reason="needs duh[ray]")
serve = pytest.importorskip("ray.serve")

from duh.integrations.ray import DeploymentConfig, deployment, run_batch_on_ray  # noqa: E402
from fixtures.serve_models import reference, write_model  # noqa: E402


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post(port: int, path: str, doc: Any) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", path, json.dumps(doc), {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_two_replicas_answer_200_concurrent_requests(local_ray: None, tmp_path: Path) -> None:
    model = write_model("light", tmp_path / "light.onnx")
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    config = DeploymentConfig(name="light", num_replicas=2, max_batch_size=16,
                              ray_actor_options={"num_cpus": 0.5}, threads=1)
    serve.run(deployment(model, config), name="light", route_prefix="/")
    try:
        status = serve.status().applications["light"].deployments["light"]
        assert status.replica_states.get("RUNNING") == 2
        rng = np.random.default_rng(4)
        xs = [rng.standard_normal((int(rng.integers(1, 4)), 256)).astype(np.float32)
              for _ in range(200)]

        def ask(x: np.ndarray) -> tuple[int, Any]:
            return _post(port, "/v2/models/light/infer", {"inputs": [
                {"name": "x", "datatype": "FP32", "shape": list(x.shape),
                 "data": x.ravel().tolist()}]})

        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(ask, xs))
        replicas = set()
        for x, (code, answer) in zip(xs, answers, strict=True):
            assert code == 200, answer
            (y,) = answer["outputs"]
            got = np.asarray(y["data"], dtype=np.float32).reshape(y["shape"])
            np.testing.assert_allclose(got, reference("light", x), rtol=1e-4, atol=1e-4)
            replicas.add(answer["parameters"]["replica"])
        assert len(replicas) == 2, "both replicas should have answered"
        code, answer = _post(port, "/v2/models/light/infer", {"inputs": [
            {"name": "nope", "datatype": "FP32", "shape": [1], "data": [1.0]}]})
        assert code == 400 and "the model takes ['x']" in answer["error"]
    finally:
        serve.shutdown()  # replicas, controller and proxy: their CPUs back for the next test


def test_autoscaling_config_is_honoured(local_ray: None, tmp_path: Path) -> None:
    model = write_model("light", tmp_path / "light.onnx")
    config = DeploymentConfig(
        name="scaled", autoscaling_config={"min_replicas": 1, "max_replicas": 3,
                                           "initial_replicas": 1},
        ray_actor_options={"num_cpus": 0.25},
    )
    serve.run(deployment(model, config), name="scaled", route_prefix="/scaled")
    try:
        details = serve.status().applications["scaled"].deployments["scaled"]
        assert details.replica_states.get("RUNNING") == 1
        handle = serve.get_deployment_handle("scaled", "scaled")
        assert handle is not None
    finally:
        serve.shutdown()


def test_batch_on_ray_data_matches_session_run(local_ray: None, tmp_path: Path) -> None:
    x = np.random.default_rng(5).standard_normal((10_000, 1, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    request = BatchRequest(DIGITS, tmp_path / "x.npy", tmp_path / "out", shard_size=2500,
                           workers=2)
    result = run_batch_on_ray(request)
    assert (result.runner, result.shards_run, result.samples_run) == ("ray", 4, 10_000)
    with duh.load(DIGITS) as session:
        expected = np.concatenate([session.run({"input": x[i : i + 1]})["logits"]
                                   for i in range(len(x))])
    np.testing.assert_allclose(read_outputs(tmp_path / "out")["logits"], expected,
                               rtol=1e-5, atol=1e-5)
    # The same folder resumes with the local pool: the shards are the same job's.
    assert run_batch(request).shards_skipped == 4
