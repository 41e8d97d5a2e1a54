"""``duh export kserve``: the YAML fits KServe's schema, and its container command serves v2."""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from duh.cli import app
from duh.errors import ConfigError
from fixtures.serve_models import build_artifact, reference

# Not imported here: kserve's package __init__ registers a gRPC proto that collides with
# Triton's (the serve tests' tritonclient); duh's validator loads only its model classes.
if importlib.util.find_spec("kserve") is None:
    pytest.skip("validating against KServe's models needs duh[kserve]", allow_module_level=True)
yaml = pytest.importorskip("yaml")

from duh.export import KServeRequest, export_kserve  # noqa: E402
from duh.export._kserve_schema import validate  # noqa: E402


@pytest.fixture(scope="module")
def light() -> Path:
    return build_artifact("light")


def _docs(path: Path) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(path.read_text()))


def test_one_artifact_gives_a_valid_runtime_service_and_dockerfile(
    light: Path, tmp_path: Path
) -> None:
    out = tmp_path / "deploy"
    result = CliRunner().invoke(app, ["export", "kserve", str(light), "-o", str(out),
                                      "--name", "light", "--max-replicas", "5"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "Dockerfile", "light.yaml", "serving-runtime.yaml"]
    (runtime,) = _docs(out / "serving-runtime.yaml")
    (service,) = _docs(out / "light.yaml")
    for doc in (runtime, service):
        validate(doc)  # what export already did; again on what was written to disk
    assert runtime["spec"]["supportedModelFormats"][0]["name"] == "duh"
    assert runtime["spec"]["protocolVersions"] == ["v2", "grpc-v2"]
    predictor = service["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 5)
    assert "canaryTrafficPercent" not in predictor
    assert predictor["model"]["storageUri"] == "pvc://duh-models/light/1"
    assert predictor["model"]["resources"]["requests"]["memory"].endswith("Mi")
    dockerfile = (out / "Dockerfile").read_text()
    assert "duh[serve]" in dockerfile and "FROM python:3.11-slim" in dockerfile


def test_two_versions_give_a_stable_service_and_a_canary(light: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for version in ("1", "2"):
        shutil.copytree(light, repo / "mlp" / version)
    export_kserve(KServeRequest(repo, tmp_path / "deploy", canary_percent=20,
                                storage_uri="s3://bucket/models/"))
    (stable,) = _docs(tmp_path / "deploy" / "mlp.stable.yaml")
    (canary,) = _docs(tmp_path / "deploy" / "mlp.yaml")
    assert stable["spec"]["predictor"]["model"]["storageUri"] == "s3://bucket/models/mlp/1"
    assert "canaryTrafficPercent" not in stable["spec"]["predictor"]
    assert canary["spec"]["predictor"]["model"]["storageUri"] == "s3://bucket/models/mlp/2"
    assert canary["spec"]["predictor"]["canaryTrafficPercent"] == 20


def test_the_schema_check_catches_what_kserve_would_refuse(light: Path, tmp_path: Path) -> None:
    export_kserve(KServeRequest(light, tmp_path / "d", name="light"))
    (service,) = _docs(tmp_path / "d" / "light.yaml")
    service["spec"]["predictor"]["model"]["storageURI"] = "typo"
    with pytest.raises(ConfigError, match=r"predictor\.model: unknown field\(s\) storageURI"):
        validate(service)
    (service,) = _docs(tmp_path / "d" / "light.yaml")
    service["spec"]["predictor"]["minReplicas"] = "one"
    with pytest.raises(ConfigError, match="minReplicas: 'one' is not of type int"):
        validate(service)
    (runtime,) = _docs(tmp_path / "d" / "serving-runtime.yaml")
    del runtime["spec"]["supportedModelFormats"][0]["name"]
    runtime["spec"]["containers"][0]["ports"][0].pop("containerPort")
    with pytest.raises(ConfigError, match=r"ports\[0\]: .*containerPort Field required"):
        validate(runtime)


def test_bad_requests_are_one_line_errors(light: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    bad = runner.invoke(app, ["export", "kserve", str(light), "-o", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "cannot name an InferenceService" in " ".join(bad.output.split())
    assert not (tmp_path / "x").exists()
    bad = runner.invoke(app, ["export", "kserve", str(light), "-o", str(tmp_path / "x"),
                              "--name", "m", "--min-replicas", "4", "--max-replicas", "2"])
    assert bad.exit_code == 2 and "replicas" in bad.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kubelet_args(args: list[str], env: dict[str, str], name: str) -> list[str]:
    """What KServe's controller ({{.Name}}) and the kubelet ($(VAR)) make of the args."""
    expanded = [a.replace("{{.Name}}", name) for a in args]
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m[1]], a) for a in expanded]


def test_the_container_command_serves_v2_on_kserves_layout(light: Path, tmp_path: Path) -> None:
    export_kserve(KServeRequest(light, tmp_path / "deploy", name="light"))
    (runtime,) = _docs(tmp_path / "deploy" / "serving-runtime.yaml")
    container = runtime["spec"]["containers"][0]
    # The storage initializer copies storageUri (one artifact directory) into /mnt/models.
    models = tmp_path / "mnt" / "models"
    shutil.copytree(light, models)
    http_port, grpc_port = _free_port(), _free_port()
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {"DUH_MODEL_DIR": "/mnt/models", "DUH_HTTP_PORT": "8080", "GRPC_PORT": "8081"}
    env.update(DUH_MODEL_DIR=str(models), DUH_HTTP_PORT=str(http_port), GRPC_PORT=str(grpc_port))
    command = [str(Path(sys.executable).parent / container["command"][0]),
               *_kubelet_args(container["args"], env, "light"),
               "--host", "127.0.0.1"]  # the one change: this shared machine listens locally only
    base = {k: v for k, v in os.environ.items() if k not in ("PORT", "GRPC_PORT")}
    proc = subprocess.Popen(command, env={**base, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True).start()
    try:
        deadline = time.monotonic() + 90
        while not any("serving" in line for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
        assert f"127.0.0.1:{grpc_port}" in "".join(lines)
        probe = container["readinessProbe"]["httpGet"]["path"]
        conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)
        conn.request("GET", probe)
        ready = conn.getresponse()
        ready.read()
        assert ready.status == 200
        x = np.random.default_rng(3).standard_normal((3, 256)).astype(np.float32)
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 256],
                            "data": x.ravel().tolist()}]}
        conn.request("POST", "/v2/models/light/infer", json.dumps(body),
                     {"Content-Type": "application/json"})
        response = conn.getresponse()
        answer = json.loads(response.read())
        assert response.status == 200, answer
        (y,) = answer["outputs"]
        got = np.asarray(y["data"], dtype=np.float32).reshape(y["shape"])
        np.testing.assert_allclose(got, reference("light", x), rtol=1e-4, atol=1e-4)
        conn.close()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
