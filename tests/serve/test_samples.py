"""Sampled request/response logging (--log-samples) to JSONL: lines a later evaluation can read,
a bounded file that rotates, a sampling rate that holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from duh.serve import SampleConfig
from duh.serve._samples import SampleLog
from fixtures.serve_models import reference


def test_every_request_logged_with_its_answer_and_the_file_rotates(
    serve_models: dict[str, Path], start_server: Any, tmp_path: Path
) -> None:
    log = tmp_path / "logs" / "samples.jsonl"
    # 0.05 MiB: a request of 4 rows of 256 floats is ~21 KB as JSON, so two fill the file.
    server = start_server(f"light={serve_models['light']}", "--log-samples", "1",
                          "--log-samples-file", log, "--log-samples-max-mb", "0.05")
    sent = []
    for i in range(6):
        x = np.random.default_rng(i).standard_normal((4, 256)).astype(np.float32)
        status, doc = server.post_json("/v2/models/light/infer", {"id": f"r{i}", "inputs": [{
            "name": "x", "shape": [4, 256], "datatype": "FP32", "data": x.ravel().tolist()}]})
        assert status == 200, doc
        sent.append(x)
    assert server.stop() == 0, server.log()  # the writer finishes its queue before exit
    rotated = log.with_name("samples.jsonl.1")
    assert rotated.is_file() and log.is_file()
    assert log.stat().st_size <= 0.05 * (1 << 20) and rotated.stat().st_size <= 0.05 * (1 << 20)
    lines = [json.loads(s) for s in rotated.read_text().splitlines()]
    lines += [json.loads(s) for s in log.read_text().splitlines()]
    ids = [line["id"] for line in lines]
    assert ids == sorted(ids) and set(ids) <= {f"r{i}" for i in range(6)}
    assert ids[-1] == "r5" and len(ids) >= 2  # the newest kept, older ones rotated out
    for line in lines:
        x = sent[int(line["id"][1:])]
        assert line["model"] == "light" and line["version"] == "1" and "time" in line
        tensor = line["inputs"]["x"]
        assert tensor["datatype"] == "FP32" and tensor["shape"] == [4, 256]
        np.testing.assert_array_equal(np.asarray(tensor["data"], np.float32).reshape(4, 256), x)
        y = line["outputs"]["y"]
        np.testing.assert_allclose(np.asarray(y["data"]).reshape(y["shape"]),
                                   reference("light", x), rtol=1e-4, atol=1e-4)


def test_sampling_rate(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    log = SampleLog(SampleConfig(rate=0.25, path=path), CollectorRegistry())
    x = {"x": np.ones((1, 3), np.float32)}
    for i in range(800):
        log.offer("m", "1", str(i), x, {"y": np.array([[float("nan")]], np.float32)})
    log.close()
    lines = path.read_text().splitlines()
    assert 120 < len(lines) < 280  # 200 expected; a rate ignored would give 0 or 800
    first = json.loads(lines[0])
    assert first["outputs"]["y"]["data"] == [None]  # NaN is not JSON: written as null
