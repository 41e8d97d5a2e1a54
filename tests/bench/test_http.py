"""``--url``: the Open Inference Protocol client against a test server and ``duh serve``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from duh.bench import bench_url
from duh.bench._http import decode_response, encode_request
from duh.cli import app
from duh.errors import ConfigError, TargetError
from tests.bench.conftest import OipServer, quick_settings

runner = CliRunner()


def test_binary_requests_round_trip() -> None:
    feed = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.array([[7]], np.int64)}
    body, headers = encode_request(feed, ["y"], binary=True)
    size = int(headers["Inference-Header-Content-Length"])
    header = json.loads(body[:size])
    assert [i["datatype"] for i in header["inputs"]] == ["FP32", "INT64"]
    assert header["inputs"][0]["parameters"]["binary_data_size"] == 24
    assert header["outputs"] == [{"name": "y", "parameters": {"binary_data": True}}]
    assert body[size:] == feed["x"].tobytes() + feed["n"].tobytes()


def test_json_requests_and_responses() -> None:
    body, headers = encode_request({"x": np.ones((1, 2), np.float32)}, ["y"], binary=False)
    assert headers == {"Content-Type": "application/json"}
    assert json.loads(body)["inputs"][0]["data"] == [1.0, 1.0]
    response = json.dumps({"outputs": [{"name": "y", "datatype": "INT32", "shape": [2],
                                        "data": [4, 5]}]}).encode()
    assert decode_response(response, None)["y"].tolist() == [4, 5]


@pytest.mark.parametrize("binary", [True, False])
def test_measures_a_served_model_with_server_statistics(oip_server: OipServer, binary: bool) -> None:
    report = bench_url(oip_server.url, ["digits"], quick_settings(
        scenarios=("single-stream", "multi-stream")), binary=binary)
    assert [s.kind for s in report.subjects] == ["url"]
    assert report.subjects[0].options == {"protocol": "binary" if binary else "json"}
    assert [m.config for m in report.measurements] == ["batch 1", "streams 2 batch 1"]
    for m in report.measurements:
        assert m.latency.count > 0 and m.inferences_per_s > 0
        assert m.server is not None and m.server["requests"] > 0
        assert m.server["mean_batch"] == pytest.approx(1.0)
    assert (oip_server.binary_requests > 0) == binary


def test_an_overloaded_server_is_counted_as_rejections(oip_server: OipServer) -> None:
    from duh.bench import HttpSubject
    from duh.bench._inputs import make_workloads
    from duh.bench._loop import closed_loop

    subject = HttpSubject(oip_server.url, "digits")
    payloads = subject.payloads(make_workloads(subject.inputs, [], [None])[0])
    oip_server.reject = True
    window = closed_loop(subject.runner(), payloads, seconds=0.0, min_runs=5)
    assert (window.completed, window.rejected) == (0, 5)
    subject.close()


def test_a_server_refusing_from_the_start_is_an_error(oip_server: OipServer) -> None:
    oip_server.reject = True
    with pytest.raises(TargetError, match="refused the first request as overloaded"):
        bench_url(oip_server.url, ["digits"], quick_settings())


def test_unknown_model_and_unreachable_server(oip_server: OipServer) -> None:
    with pytest.raises(ConfigError, match="has no model 'nope'"):
        bench_url(oip_server.url, ["nope"], quick_settings())
    with pytest.raises(ConfigError, match="is the server running"):
        bench_url("http://127.0.0.1:9", ["digits"], quick_settings())


def test_duh_serve_through_the_cli(duh_serve: str, tmp_path: Path) -> None:
    out = tmp_path / "serve.json"
    result = runner.invoke(app, [
        "bench", "--url", duh_serve, "--model", "digits", "--concurrency", "1:3:2",
        "--window", "0.1", "--min-windows", "2", "--max-windows", "3", "--json", str(out)])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(out.read_text())
    assert doc["subjects"][0]["kind"] == "url"
    rows = doc["results"]
    assert [r["config"] for r in rows] == ["streams 1 batch 1", "streams 3 batch 1"]
    for row in rows:
        assert row["throughput"]["inferences_per_s"] > 0
        assert row["server_side"] is not None and row["server_side"]["requests"] > 0
