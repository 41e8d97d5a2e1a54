"""Random bodies thrown at the infer endpoint: always a 4xx with a JSON error (or a right 200)."""

from __future__ import annotations

import http.client
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.serve.conftest import ServerProcess

DATATYPES = ["FP32", "FP16", "FP64", "INT8", "INT32", "INT64", "UINT8", "BOOL", "BYTES",
             "fp32", "", "BF16"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=6),
    max_leaves=40,
)
shapes = st.lists(st.integers(-2, 300), max_size=4) | json_values
tensors = st.fixed_dictionaries(
    {"name": st.sampled_from(["x", "s", "y", ""]) | json_values,
     "datatype": st.sampled_from(DATATYPES) | json_values,
     "shape": shapes},
    optional={
        "data": st.lists(st.floats(-1e6, 1e6) | st.integers(-300, 300), max_size=600)
        | json_values,
        "parameters": st.fixed_dictionaries({"binary_data_size": st.integers(-5, 3000)})
        | json_values,
    },
)
documents = st.fixed_dictionaries(
    {"inputs": st.lists(tensors, max_size=3) | json_values},
    optional={"id": json_values, "outputs": json_values,
              "parameters": st.dictionaries(st.sampled_from(["timeout", "binary_data_output",
                                                             "shared_memory_region"]),
                                            json_values, max_size=2)},
)


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    kind = draw(st.sampled_from(["bytes", "json", "document", "binary"]))
    if kind == "bytes":
        return draw(st.binary(max_size=3000)), {}
    if kind == "json":
        return json.dumps(draw(json_values)).encode(), {}
    head = json.dumps(draw(documents)).encode()
    if kind == "document":
        return head, {}
    tail = draw(st.binary(max_size=3000))
    length = draw(st.sampled_from([len(head), len(head) + len(tail) + 1, 0]) |
                  st.integers(-10, len(head) + len(tail) + 10))
    return head + tail, {"Inference-Header-Content-Length": str(length)}


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=bodies(), model=st.sampled_from(["light", "strings", "fixed", "half", "nope"]))
def test_random_bodies_get_4xx_and_the_server_stays_up(
    server: ServerProcess, case: tuple[bytes, dict[str, str]], model: str
) -> None:
    body, headers = case
    conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        conn.request("POST", f"/v2/models/{model}/infer", body=body, headers=headers)
        response = conn.getresponse()
        payload = response.read()
    finally:
        conn.close()
    if response.status == 200:  # a random body may be a valid request
        doc: Any = json.loads(payload[: int(response.getheader(
            "Inference-Header-Content-Length") or len(payload))])
        assert doc["model_name"] == model
        return
    assert response.status in (400, 404, 413), payload
    error = json.loads(payload)["error"]
    assert isinstance(error, str) and error


def test_server_is_still_live_after_the_fuzzing(server: ServerProcess) -> None:
    assert server.request("GET", "/v2/health/live")[0] == 200
    assert server.proc.poll() is None
