"""Async jobs against real ``duh serve`` processes: submit, hang up, fetch later; TTL, bound,
webhooks to a loopback server, the API key."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from fixtures.serve_models import reference
from tests.serve.conftest import ServerProcess

API = "api-key-0123456789ab"
JOBS = "/v2/models/light/jobs"


def _body(x: np.ndarray, **parameters: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                       "data": x.ravel().tolist()}]}
    if parameters:
        doc["parameters"] = parameters
    return doc


def _rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 256)).astype(np.float32)


def _wait(server: ServerProcess, job_id: str, timeout_s: float = 30.0,
          headers: dict[str, str] | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        status, _, body = server.request("GET", f"{JOBS}/{job_id}", headers=headers)
        assert status == 200, body
        doc = json.loads(body)
        if doc["status"] in ("done", "failed") or time.monotonic() > deadline:
            return doc
        time.sleep(0.05)


def _output(doc: dict[str, Any]) -> np.ndarray:
    (out,) = doc["result"]["outputs"]
    return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])


@pytest.fixture(scope="module")
def job_server(serve_models: dict[str, Path]) -> Iterator[ServerProcess]:
    """The light MLP with a 1.5 s queue delay: a single request waits for its batch to fill,
    so a job is still queued when its client has gone."""
    proc = ServerProcess([f"light={serve_models['light']}", "--max-queue-delay-ms", "1500",
                          "--preferred-batch-sizes", "64", "--max-batch-size", "64"])
    yield proc
    assert proc.stop() == 0, proc.log()


def test_job_survives_the_client_hanging_up(job_server: ServerProcess) -> None:
    x = _rows(3, 1)
    body = json.dumps(_body(x)).encode()
    sock = socket.create_connection((job_server.host, job_server.port))
    sock.sendall(b"POST " + JOBS.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: "
                 b"application/json\r\nContent-Length: " + str(len(body)).encode()
                 + b"\r\n\r\n" + body)
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
        answer += sock.recv(65536)
    # Hang up at once, with a reset: the job is queued behind the 1.5 s batch delay.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 202")
    job = json.loads(payload)
    assert job["status"] == "queued" and job["model"] == "light"
    assert f"Location: {JOBS}/{job['id']}".encode() in head
    status, _, now = job_server.request("GET", f"{JOBS}/{job['id']}")
    assert status == 200 and json.loads(now)["status"] in ("queued", "running")
    done = _wait(job_server, job["id"])
    assert done["status"] == "done", done
    assert done["result"]["model_name"] == "light"
    np.testing.assert_allclose(_output(done), reference("light", x), rtol=1e-4, atol=1e-4)
    # Fetched again: still there (kept for --job-ttl-s).
    assert _wait(job_server, job["id"])["status"] == "done"


def test_failed_job_and_unknown_ids(job_server: ServerProcess) -> None:
    status, job = job_server.post_json(JOBS, _body(np.zeros((1, 7), np.float32)))
    assert status == 202
    failed = _wait(job_server, job["id"])
    assert failed["status"] == "failed" and failed["code"] == 400
    assert "x" in failed["error"] and "256" in failed["error"]
    status, _, body = job_server.request("GET", f"{JOBS}/{'0' * 32}")
    assert status == 404 and "--job-ttl-s" in json.loads(body)["error"]
    status, doc = job_server.post_json("/v2/models/nope/jobs", _body(_rows(1, 2)))
    assert status == 404 and "nope" in doc["error"]
    status, doc = job_server.post_json(JOBS, {"inputs": "x"})
    assert status == 400 and "inputs" in doc["error"]
    # A pinned version: the job runs on it and its id is found under the model.
    x = _rows(1, 5)
    status, job = job_server.post_json("/v2/models/light/versions/1/jobs", _body(x))
    assert status == 202
    done = _wait(job_server, job["id"])
    assert done["version"] == "1" and done["result"]["model_version"] == "1"


class _Hooks(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []
    arrived = threading.Event()

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        type(self).received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()
        type(self).arrived.set()

    def log_message(self, *args: Any) -> None:
        pass


def test_webhook_posts_the_result_to_a_loopback_server(job_server: ServerProcess) -> None:
    hooks = http.server.HTTPServer(("127.0.0.1", 0), _Hooks)
    thread = threading.Thread(target=hooks.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{hooks.server_port}/done"
        x = _rows(2, 3)
        status, job = job_server.post_json(JOBS, _body(x, callback_url=url))
        assert status == 202
        assert _Hooks.arrived.wait(30), job_server.log()
        (posted,) = _Hooks.received
        assert posted["id"] == job["id"] and posted["status"] == "done"
        np.testing.assert_allclose(_output(posted), reference("light", x), rtol=1e-4, atol=1e-4)
        fetched = _wait(job_server, job["id"])
        assert fetched["callback"] == {"url": url, "status": 204}
    finally:
        hooks.shutdown()
        hooks.server_close()
    status, doc = job_server.post_json(JOBS, _body(x, callback_url="http://example.com/hook"))
    assert status == 400 and "--allow-webhook-hosts" in doc["error"]


def test_ttl_bounded_store_and_api_key(
    serve_models: dict[str, Path], start_server: Any
) -> None:
    server = start_server(f"light={serve_models['light']}", "--job-ttl-s", "1",
                          "--max-jobs", "2", "--api-key", API)
    key = {"authorization": f"Bearer {API}", "Content-Type": "application/json"}
    body = json.dumps(_body(_rows(1, 4))).encode()
    status, _, answer = server.request("POST", JOBS, body, {"Content-Type": "application/json"})
    assert status == 401, answer
    ids = []
    for _ in range(2):
        status, _, answer = server.request("POST", JOBS, body, key)
        assert status == 202, answer
        ids.append(json.loads(answer)["id"])
    status, headers, answer = server.request("POST", JOBS, body, key)
    assert status == 503 and "--max-jobs" in json.loads(answer)["error"]
    assert int(headers["Retry-After"]) >= 1
    status, _, _ = server.request("GET", f"{JOBS}/{ids[0]}")
    assert status == 401
    assert _wait(server, ids[0], headers=key)["status"] == "done"
    assert _wait(server, ids[1], headers=key)["status"] == "done"
    time.sleep(1.3)  # past --job-ttl-s: both results are gone and the store has room again
    status, _, answer = server.request("GET", f"{JOBS}/{ids[0]}", headers=key)
    assert status == 404 and "--job-ttl-s" in json.loads(answer)["error"]
    status, _, answer = server.request("POST", JOBS, body, key)
    assert status == 202, answer
    assert server.stop() == 0, server.log()


def test_job_submissions_are_rate_limited_and_load_a_model_not_resident(
    serve_models: dict[str, Path], start_server: Any
) -> None:
    # Under --memory-budget the model loads on its first request: here, a job.
    server = start_server(f"light={serve_models['light']}", "--rate-limit", "0.1/s,burst=2",
                          "--memory-budget", "4G")
    x = _rows(1, 6)
    answers = [server.post_json(JOBS, _body(x)) for _ in range(3)]
    assert [status for status, _ in answers] == [202, 202, 429]
    done = _wait(server, answers[0][1]["id"])
    assert done["status"] == "done", done
    np.testing.assert_allclose(_output(done), reference("light", x), rtol=1e-4, atol=1e-4)
    assert server.stop() == 0, server.log()


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--max-jobs", "0", "--max-jobs 0: give at least 1"),
    ("--job-ttl-s", "0", "--job-ttl-s 0.0: give a number of seconds above 0"),
    ("--drift-window", "3", "--drift-window 3: give at least 16 rows"),
    ("--drift-alert", "-1", "--drift-alert -1.0: give a PSI above 0"),
    ("--log-samples", "2", "--log-samples 2.0: give a share from 0 to 1"),
])
def test_bad_options_fail_in_one_line(serve_models: dict[str, Path], option: str, value: str,
                                      message: str) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", "from duh.cli import main; main()", "serve",
         f"light={serve_models['light']}", "--port", "0", option, value],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode != 0
    assert message in " ".join(done.stderr.split()), done.stderr
