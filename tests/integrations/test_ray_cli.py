"""``duh ray serve`` as a user starts it: its own local Ray, v2 JSON on 127.0.0.1, Ctrl-C stops."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ray.serve", reason="needs duh[ray]")

from fixtures.serve_models import reference, write_model


def test_duh_ray_serve_answers_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    model = write_model("light", tmp_path / "light.onnx")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen(
        [sys.executable, "-m", "duh", "ray", "serve", str(model), "--port", str(port),
         "--num-cpus", "0.5", "--replicas", "1", "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        x = np.random.default_rng(6).standard_normal((2, 256)).astype(np.float32)
        body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 256],
                                       "data": x.ravel().tolist()}]})
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "duh ray serve did not become ready"
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                conn.request("POST", "/v2/models/light/infer", body,
                             {"Content-Type": "application/json"})
                response = conn.getresponse()
                answer = response.read()
                if response.status == 200:
                    break
            except OSError:
                pass
            time.sleep(1)
        (y,) = json.loads(answer)["outputs"]
        got = np.asarray(y["data"], dtype=np.float32).reshape(y["shape"])
        np.testing.assert_allclose(got, reference("light", x), rtol=1e-4, atol=1e-4)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, out
    assert "stopped" in out
