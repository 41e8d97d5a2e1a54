"""The protocol codec: JSON tensors, Triton's binary extension, BYTES and FP16."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from tritonclient.http import InferResult
from tritonclient.utils import serialize_byte_tensor

from duh.serve._codec import (
    RequestedOutput,
    decode_http_request,
    encode_http_response,
    tensor_from_raw,
    tensor_to_raw,
)
from duh.serve._errors import RequestError


def _doc(**tensor: object) -> bytes:
    base: dict[str, object] = {"name": "x", "shape": [2, 2], "datatype": "FP32",
                               "data": [1, 2, 3, 4]}
    base.update(tensor)
    return json.dumps({"inputs": [base]}).encode()


def _binary(tensors: list[tuple[dict, bytes]], **params: object) -> tuple[bytes, str]:
    head = json.dumps({"inputs": [t for t, _ in tensors], "parameters": params}).encode()
    return head + b"".join(raw for _, raw in tensors), str(len(head))


def test_json_flat_and_nested_data_give_the_same_array() -> None:
    flat = decode_http_request(_doc(), None).inputs["x"]
    nested = decode_http_request(_doc(data=[[1, 2], [3, 4]]), None).inputs["x"]
    assert flat.dtype == np.float32 and flat.shape == (2, 2)
    np.testing.assert_array_equal(flat, nested)


def test_json_fp16_bool_and_int_datatypes() -> None:
    half = decode_http_request(_doc(datatype="FP16", data=[0.5, 1.5, 2.5, -1]), None)
    assert half.inputs["x"].dtype == np.float16 and half.inputs["x"][0, 1] == 1.5
    flags = decode_http_request(_doc(datatype="BOOL", data=[True, False, True, True]), None)
    assert flags.inputs["x"].dtype == np.bool_
    with pytest.raises(RequestError, match="outside the UINT8 range"):
        decode_http_request(_doc(datatype="UINT8", data=[1, 2, 3, 300]), None)
    with pytest.raises(RequestError, match="INT32 but its data holds floats"):
        decode_http_request(_doc(datatype="INT32", data=[1.5, 2, 3, 4]), None)


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        ({"data": [1, 2, 3]}, "has 3 data elements but shape \\[2, 2\\] needs 4"),
        ({"datatype": "FLOAT"}, "datatype 'FLOAT', expected one of"),
        ({"shape": [2, -2]}, "expected a list of non-negative integers"),
        ({"shape": "2x2"}, "expected a list of non-negative integers"),
        ({"data": [[1, 2], [3]]}, "not a regular array"),
        ({"data": ["a", "b", "c", "d"]}, "FP32 but its data holds strings"),
        ({"data": None}, "holds values"),
    ],
)
def test_bad_json_tensors_are_rejected_with_the_reason(tensor: dict, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        decode_http_request(_doc(**tensor), None)


def test_bad_documents_are_rejected() -> None:
    with pytest.raises(RequestError, match="not valid JSON"):
        decode_http_request(b"{nope", None)
    with pytest.raises(RequestError, match="must be a JSON object"):
        decode_http_request(b"[1, 2]", None)
    with pytest.raises(RequestError, match="non-empty list"):
        decode_http_request(b'{"inputs": []}', None)
    with pytest.raises(RequestError, match="given twice"):
        decode_http_request(json.dumps({"inputs": [json.loads(_doc())["inputs"][0]] * 2}).encode(),
                            None)
    with pytest.raises(RequestError, match="timeout"):
        decode_http_request(json.dumps({**json.loads(_doc()), "parameters": {"timeout": -1}})
                            .encode(), None)
    with pytest.raises(RequestError, match="not valid JSON"):
        decode_http_request(b"[" * 100_000, None)


def test_binary_request_decodes_in_input_order() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([[1, 2]], dtype=np.int64)
    body, size = _binary([
        ({"name": "a", "shape": [2, 3], "datatype": "FP32",
          "parameters": {"binary_data_size": a.nbytes}}, a.tobytes()),
        ({"name": "b", "shape": [1, 2], "datatype": "INT64",
          "parameters": {"binary_data_size": b.nbytes}}, b.tobytes()),
    ], binary_data_output=True)
    request = decode_http_request(body, size)
    np.testing.assert_array_equal(request.inputs["a"], a)
    np.testing.assert_array_equal(request.inputs["b"], b)
    assert request.binary_output is True


@pytest.mark.parametrize(
    ("header", "size", "extra", "message"),
    [
        ("99999", 16, b"", "Inference-Header-Content-Length is '99999' but the body has"),
        ("-1", 16, b"", "Inference-Header-Content-Length is '-1'"),
        ("abc", 16, b"", "Inference-Header-Content-Length is 'abc'"),
        (None, 32, b"", "declares binary_data_size 32 but only 16 bytes"),
        (None, 16, b"xx", "2 bytes of binary data beyond"),
        (None, 12, b"", "has 12 bytes of binary data but shape \\[1, 4\\] of FP32 needs 16"),
    ],
)
def test_binary_lengths_that_lie_are_rejected(
    header: str | None, size: int, extra: bytes, message: str
) -> None:
    raw = np.ones(4, dtype=np.float32).tobytes()
    body, true_size = _binary([({"name": "x", "shape": [1, 4], "datatype": "FP32",
                                 "parameters": {"binary_data_size": size}}, raw[:max(size, 16)]
                                if size <= 16 else raw)])
    body += extra
    with pytest.raises(RequestError, match=message):
        decode_http_request(body, header if header is not None else true_size)


def test_bytes_tensors_round_trip_in_triton_layout() -> None:
    values = np.array([b"hello", b"", "wörld".encode()], dtype=object)
    raw = serialize_byte_tensor(values).item()  # tritonclient's own encoding
    decoded = tensor_from_raw("s", "BYTES", (3,), raw)
    assert list(decoded) == list(values)
    assert tensor_to_raw(decoded) == raw
    with pytest.raises(RequestError, match="holds 3 BYTES elements, its shape needs 2"):
        tensor_from_raw("s", "BYTES", (2,), raw)
    with pytest.raises(RequestError, match="declares 1000 bytes"):
        tensor_from_raw("s", "BYTES", (1,), struct.pack("<I", 1000) + b"abc")


@pytest.mark.parametrize("binary", [True, False])
def test_responses_parse_with_tritonclient(binary: bool) -> None:
    outputs: dict[str, np.ndarray] = {
        "y": np.arange(6, dtype=np.float32).reshape(2, 3) / 7,
        "h": np.array([[0.5, -2]], dtype=np.float16),
        "s": np.array(["a", "bc"], dtype=object),
    }
    body, size = encode_http_response("m", "3", "req-1", outputs, [binary] * 3)
    assert (size is not None) is binary
    result = InferResult.from_response_body(body, False, size)
    assert result.get_response()["id"] == "req-1"
    assert result.get_response()["model_version"] == "3"
    np.testing.assert_array_equal(result.as_numpy("y"), outputs["y"])
    np.testing.assert_array_equal(result.as_numpy("h"), outputs["h"])
    assert [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("s")] == ["a", "bc"]


def test_requested_outputs_and_their_binary_flags() -> None:
    doc = json.loads(_doc())
    doc["outputs"] = [{"name": "y", "parameters": {"binary_data": False}}, {"name": "z"}]
    request = decode_http_request(json.dumps(doc).encode(), None)
    assert request.outputs == (RequestedOutput("y", False), RequestedOutput("z", None))
    doc["outputs"] = [{"name": "y", "parameters": {"classification": 3}}]
    with pytest.raises(RequestError, match="classification"):
        decode_http_request(json.dumps(doc).encode(), None)
