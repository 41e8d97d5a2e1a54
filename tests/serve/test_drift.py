"""Drift monitoring against a real ``duh serve``: the digits CNN built with its calibration set;
held-out digits stay below the alert, digits with inverted contrast go far above it."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import duh
from tests.serve.conftest import ServerProcess

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
WINDOW = 200
ROWS = 25  # per request: a quarter window is two requests


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("drift") / "digits.duh"
    duh.build(FIXTURES / "digits_cnn.onnx", "onnxruntime:cpu-fp32", out,
              calib=FIXTURES / "digits_calib.npz")
    return out


@pytest.fixture(scope="module")
def drift_server(digits: Path, serve_models: dict[str, Path]) -> Iterator[ServerProcess]:
    proc = ServerProcess([f"digits={digits}", f"light={serve_models['light']}",
                          "--drift-window", str(WINDOW), "--drift-alert", "0.2",
                          "--grpc-port", "0"])
    yield proc
    assert proc.stop() == 0, proc.log()


def _send(server: ServerProcess, images: np.ndarray) -> None:
    for start in range(0, len(images), ROWS):
        batch = images[start : start + ROWS]
        status, doc = server.post_json("/v2/models/digits/infer", {"inputs": [{
            "name": "input", "shape": list(batch.shape), "datatype": "FP32",
            "data": batch.ravel().tolist()}]})
        assert status == 200, doc


def _drift(server: ServerProcess, model: str = "digits") -> dict[str, Any] | None:
    status, _, body = server.request("GET", f"/v2/models/{model}/stats")
    assert status == 200
    (entry,) = json.loads(body)["model_stats"]
    return entry.get("drift")


def _gauge(server: ServerProcess, name: str) -> float:
    _, _, body = server.request("GET", "/metrics")
    line = re.search(rf'^{name}\{{input="input",model="digits",version="1"\}} (\S+)$',
                     body.decode(), re.M)
    assert line is not None, body.decode()[:2000]
    return float(line[1])


def _warnings(server: ServerProcess) -> list[str]:
    """The drift warnings logged (the log handler may wrap one over several lines)."""
    text = " ".join(" ".join(server.stderr).split())
    return text.split("drift: model digits")[1:]


def test_held_out_digits_stay_below_and_inverted_digits_pass_the_alert(
    drift_server: ServerProcess,
) -> None:
    test = np.load(FIXTURES / "digits_test.npz")["input"]
    held_out, later = test[:WINDOW], test[WINDOW : 2 * WINDOW]
    _send(drift_server, held_out)
    drift = _drift(drift_server)
    assert drift is not None and "digits_calib.npz" in drift["reference"]
    real = drift["inputs"]["input"]
    assert real["window_rows"] == WINDOW and real["features"] == 1
    assert real["psi"] < 0.2 and real["ks"] < 0.1, real
    assert _gauge(drift_server, "duh_input_drift_psi") == pytest.approx(real["psi"])
    assert not _warnings(drift_server)

    _send(drift_server, 1.0 - later)  # inverted contrast: white background, dark strokes
    shifted = _drift(drift_server)["inputs"]["input"]  # type: ignore[index]
    assert shifted["psi"] > 0.2 and shifted["psi"] > 10 * real["psi"], shifted
    assert shifted["ks"] > 0.3
    assert _gauge(drift_server, "duh_input_drift_psi") == pytest.approx(shifted["psi"])
    deadline = time.monotonic() + 5
    while not _warnings(drift_server) and time.monotonic() < deadline:
        time.sleep(0.05)
    (warning,) = _warnings(drift_server)  # once per window, however many quarters pass it
    assert "input 'input'" in warning and "--drift-alert 0.2" in warning
    assert _gauge(drift_server, "duh_input_drift_alerts_total") == 1.0

    # Real digits again: as the window refills with them the score falls back below the alert.
    _send(drift_server, np.concatenate([test[2 * WINDOW :], test[: 3 * WINDOW - len(test)]]))
    back = _drift(drift_server)["inputs"]["input"]  # type: ignore[index]
    assert back["psi"] < 0.2, back


def test_a_model_without_reference_statistics_is_not_monitored(
    drift_server: ServerProcess,
) -> None:
    x = np.zeros((1, 256), np.float32)
    status, _ = drift_server.post_json("/v2/models/light/infer", {"inputs": [{
        "name": "x", "shape": [1, 256], "datatype": "FP32", "data": x.ravel().tolist()}]})
    assert status == 200
    assert _drift(drift_server, "light") is None
    _, _, body = drift_server.request("GET", "/metrics")
    assert 'model="light"' not in "".join(
        line for line in body.decode().splitlines() if line.startswith("duh_input_drift"))


def test_grpc_requests_count_too(drift_server: ServerProcess) -> None:
    import tritonclient.grpc as grpcclient

    before = _drift(drift_server)["inputs"]["input"]["rows_seen"]  # type: ignore[index]
    images = np.load(FIXTURES / "digits_test.npz")["input"][:30]
    client = grpcclient.InferenceServerClient(str(drift_server.grpc))
    tensor = grpcclient.InferInput("input", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images)
    assert client.infer("digits", [tensor]).as_numpy("logits").shape == (30, 10)
    after = _drift(drift_server)["inputs"]["input"]["rows_seen"]  # type: ignore[index]
    assert after == before + 30


def test_images_are_sampled_per_channel_and_the_shifted_channel_is_named() -> None:
    from prometheus_client import CollectorRegistry

    from duh.compiler._datastats import reference_stats
    from duh.runtime import TensorSpec
    from duh.serve import DriftConfig
    from duh.serve._drift import DriftMonitors, _Monitor

    rng = np.random.default_rng(7)

    def images(n: int, shift: float = 0.0) -> np.ndarray:
        x = rng.standard_normal((n, 3, 32, 32)).astype(np.float32) + np.arange(3)[:, None, None]
        x[:, 2] += shift
        return x.astype(np.float32)

    stats = reference_stats([TensorSpec("img", "float32", ("N", 3, 32, 32))],
                            [{"img": images(200)}], "photos")
    assert stats is not None and stats.inputs["img"].axis == 1
    config = DriftConfig(window=64)
    gauges = DriftMonitors(config, CollectorRegistry()).gauges
    same, shifted = (_Monitor("m", "1", stats, config, gauges) for _ in range(2))
    for _ in range(64):  # one image per request: 3072 values, sampled to 512 per channel
        same.observe({"img": images(1)})
        shifted.observe({"img": images(1, shift=1.5)})
    calm = same.to_json()["inputs"]["img"]
    moved = shifted.to_json()["inputs"]["img"]
    assert calm["window_rows"] == 64 and calm["psi_max"] < 0.05, calm
    assert moved["worst_feature"] == 2 and moved["psi_max"] > 1.0, moved
    assert moved["psi"] > 0.2  # the mean over the three channels passes too
