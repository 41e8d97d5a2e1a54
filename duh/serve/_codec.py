"""The Open Inference Protocol's tensors over HTTP: JSON, and Triton's binary tensor extension.

A binary request is a JSON header of ``Inference-Header-Content-Length`` bytes followed by the
raw tensors, in input order, each declared by ``"parameters": {"binary_data_size": N}``. BYTES
elements are length-prefixed (4-byte little-endian length, then the bytes). A response carries
outputs in binary when the request asks (``binary_data_output`` or an output's ``binary_data``),
with the same header naming the JSON part's length.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from duh.serve._errors import RequestError

orjson: Any
try:  # orjson parses and writes number arrays several times faster than the json module
    import orjson
except ImportError:  # pragma: no cover - exercised where orjson is not installed
    orjson = None

__all__ = [
    "DATATYPES",
    "InferRequest",
    "RequestedOutput",
    "bytes_tensor_from_raw",
    "datatype_of",
    "decode_http_request",
    "encode_http_response",
    "json_dumps",
    "json_loads",
    "numpy_dtype",
    "tensor_from_json",
    "tensor_from_raw",
    "tensor_to_raw",
]

# Protocol datatype -> numpy dtype (little-endian, as the binary extension lays tensors out).
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("bool"),
    "UINT8": np.dtype("uint8"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("int8"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype("object"),
}
_BY_NAME = {dt.name: name for name, dt in DATATYPES.items()}
_BY_NAME.update({"str": "BYTES", "bytes": "BYTES"})
# Which numpy kinds a JSON array may hold for each kind of datatype.
_JSON_KINDS = {"b": "b", "u": "iu", "i": "iu", "f": "iuf"}
_LEN = struct.Struct("<I")


def json_loads(data: bytes) -> Any:
    """Parse JSON (orjson when installed); raises ``ValueError`` or ``RecursionError``."""
    if orjson is not None:
        return orjson.loads(data)
    return json.loads(data)


def json_dumps(doc: Any) -> bytes:
    """Compact JSON bytes; numpy arrays in ``doc`` are written as (flat) lists of numbers."""
    if orjson is not None:
        return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    return json.dumps(doc, separators=(",", ":"), default=_plain).encode()


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def datatype_of(dtype: Any) -> str:
    """The protocol datatype (``FP32``, ``BYTES``, ...) of a numpy dtype or dtype name."""
    name = np.dtype(dtype).name
    try:
        return _BY_NAME[name]
    except KeyError:
        raise RequestError(f"dtype {name} has no Open Inference Protocol datatype") from None


def numpy_dtype(datatype: Any, where: str) -> np.dtype[Any]:
    """The numpy dtype of a protocol datatype; ``where`` names the tensor in the error."""
    if isinstance(datatype, str) and datatype in DATATYPES:
        return DATATYPES[datatype]
    raise RequestError(
        f"{where} has datatype {datatype!r}, expected one of {', '.join(DATATYPES)}"
    )


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    """One output a request names, and whether it wants it as binary."""

    name: str
    binary: bool | None


@dataclass(frozen=True, slots=True)
class InferRequest:
    """A decoded inference request: named arrays plus what the caller wants back."""

    inputs: dict[str, np.ndarray]
    datatypes: dict[str, str]
    id: str | None = None
    outputs: tuple[RequestedOutput, ...] | None = None
    binary_output: bool = False
    timeout_us: int | None = None


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        raise RequestError(f"{where} has shape {value!r}, expected a list of non-negative integers")
    return tuple(value)


def tensor_from_json(name: str, datatype: str, shape: tuple[int, ...], data: Any) -> np.ndarray:
    """The array a JSON ``data`` field (flat or nested, row-major) gives for ``shape``."""
    where = f"input {name!r}"
    dtype = numpy_dtype(datatype, where)
    count = math.prod(shape)
    if not isinstance(data, list):
        data = [data]
    if datatype == "BYTES":
        flat = np.array(data, dtype=object).ravel()
        if not all(isinstance(e, str) for e in flat):
            raise RequestError(f"{where} is BYTES: its data must hold strings only")
        array = flat
    else:
        try:
            array = np.array(data)
        except (ValueError, TypeError):
            raise RequestError(
                f"{where} data is not a regular array of numbers (ragged nesting or mixed types)"
            ) from None
        if array.size and array.dtype.kind not in _JSON_KINDS[dtype.kind]:
            seen = {"f": "floats", "b": "booleans", "U": "strings"}.get(array.dtype.kind, "values")
            raise RequestError(f"{where} is {datatype} but its data holds {seen}")
        if array.size and dtype.kind in "iu":
            info = np.iinfo(dtype)
            if array.min() < info.min or array.max() > info.max:
                raise RequestError(f"{where} has values outside the {datatype} range")
        array = array.astype(dtype, copy=False)
    if array.size != count:
        raise RequestError(
            f"{where} has {array.size} data elements but shape {list(shape)} needs {count}"
        )
    return array.reshape(shape)


def bytes_tensor_from_raw(raw: bytes | memoryview, count: int, where: str) -> np.ndarray:
    """Split length-prefixed BYTES elements; the section must hold exactly ``count`` of them."""
    items: list[bytes] = []
    view = memoryview(raw)
    offset, end = 0, len(view)
    while offset < end:
        if offset + 4 > end:
            raise RequestError(f"{where}: BYTES data ends inside an element's 4-byte length")
        (length,) = _LEN.unpack_from(view, offset)
        offset += 4
        if offset + length > end:
            raise RequestError(
                f"{where}: a BYTES element declares {length} bytes but only {end - offset} remain"
            )
        items.append(bytes(view[offset : offset + length]))
        offset += length
    if len(items) != count:
        raise RequestError(f"{where} holds {len(items)} BYTES elements, its shape needs {count}")
    array = np.empty(count, dtype=object)
    array[:] = items
    return array


def tensor_from_raw(
    name: str, datatype: str, shape: tuple[int, ...], raw: bytes | memoryview
) -> np.ndarray:
    """The array that raw little-endian bytes (binary extension, gRPC raw) give for ``shape``."""
    where = f"input {name!r}"
    dtype = numpy_dtype(datatype, where)
    count = math.prod(shape)
    if datatype == "BYTES":
        return bytes_tensor_from_raw(raw, count, where).reshape(shape)
    if len(raw) != count * dtype.itemsize:
        raise RequestError(
            f"{where} has {len(raw)} bytes of binary data but shape {list(shape)} of {datatype} "
            f"needs {count * dtype.itemsize}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def tensor_to_raw(array: np.ndarray) -> bytes:
    """An output's bytes as the binary extension and gRPC raw contents carry them."""
    if array.dtype.kind in "OSU":
        parts = []
        for item in array.ravel():
            data = item.encode() if isinstance(item, str) else bytes(item)
            parts += [_LEN.pack(len(data)), data]
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def _parameters(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RequestError(f"{where} parameters must be a JSON object, got {type(value).__name__}")
    if "shared_memory_region" in value:
        raise RequestError(f"{where} uses shared memory, which this server does not offer")
    return value


def _binary_flag(params: Mapping[str, Any], key: str, where: str) -> bool | None:
    value = params.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise RequestError(f"{where} parameter {key!r} must be true or false, got {value!r}")


def _decode_outputs(value: Any) -> tuple[RequestedOutput, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise RequestError(f"'outputs' must be a list of objects, got {type(value).__name__}")
    outputs = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise RequestError("each requested output must be an object with a string 'name'")
        where = f"output {item['name']!r}"
        params = _parameters(item.get("parameters"), where)
        if params.get("classification"):
            raise RequestError(f"{where} asks for classification, which this server does not offer")
        outputs.append(RequestedOutput(item["name"], _binary_flag(params, "binary_data", where)))
    return tuple(outputs)


def _timeout_us(params: Mapping[str, Any]) -> int | None:
    value = params.get("timeout")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RequestError(f"parameter 'timeout' is {value!r}, expected microseconds (an int >= 0)")
    return value or None


def decode_http_request(body: bytes, header_length: str | None) -> InferRequest:
    """Decode an HTTP infer body: JSON, or a JSON header and binary tensors (``header_length``)."""
    raw = b""
    if header_length is not None:
        try:
            json_size = int(header_length)
        except ValueError:
            json_size = -1
        if not 0 <= json_size <= len(body):
            raise RequestError(
                f"Inference-Header-Content-Length is {header_length!r} but the body has "
                f"{len(body)} bytes; it must give the length of the JSON part"
            )
        body, raw = body[:json_size], body[json_size:]
    try:
        doc = json_loads(body)
    except (ValueError, RecursionError) as exc:
        raise RequestError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise RequestError(f"request body must be a JSON object, got {type(doc).__name__}")
    params = _parameters(doc.get("parameters"), "request")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError(f"request 'id' must be a string, got {request_id!r}")
    items = doc.get("inputs")
    if not isinstance(items, list) or not items:
        raise RequestError("request must have 'inputs': a non-empty list of tensors")
    inputs: dict[str, np.ndarray] = {}
    datatypes: dict[str, str] = {}
    view = memoryview(raw)
    offset = 0
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise RequestError("each input must be an object with a string 'name'")
        name = item["name"]
        where = f"input {name!r}"
        if name in inputs:
            raise RequestError(f"{where} is given twice")
        datatype = item.get("datatype")
        if not isinstance(datatype, str):
            numpy_dtype(datatype, where)  # raises, naming the datatypes allowed
            continue
        shape = _shape(item.get("shape"), where)
        size = _parameters(item.get("parameters"), where).get("binary_data_size")
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise RequestError(f"{where} has binary_data_size {size!r}, expected an int >= 0")
            if offset + size > len(view):
                raise RequestError(
                    f"{where} declares binary_data_size {size} but only {len(view) - offset} "
                    "bytes of binary data remain in the body"
                )
            inputs[name] = tensor_from_raw(name, datatype, shape, view[offset : offset + size])
            offset += size
        elif "data" in item:
            inputs[name] = tensor_from_json(name, datatype, shape, item["data"])
        else:
            raise RequestError(f"{where} has neither 'data' nor a binary_data_size parameter")
        datatypes[name] = datatype
    if offset != len(view):
        raise RequestError(
            f"the body has {len(view) - offset} bytes of binary data beyond what the inputs' "
            "binary_data_size parameters declare"
        )
    return InferRequest(
        inputs=inputs,
        datatypes=datatypes,
        id=request_id,
        outputs=_decode_outputs(doc.get("outputs")),
        binary_output=bool(_binary_flag(params, "binary_data_output", "request")),
        timeout_us=_timeout_us(params),
    )


def _json_data(name: str, array: np.ndarray) -> Any:
    if array.dtype.kind not in "OSU":
        flat = array.ravel()
        return flat if flat.dtype.isnative else flat.tolist()
    out = []
    for item in array.ravel():
        if isinstance(item, bytes):
            try:
                item = item.decode()
            except UnicodeDecodeError:
                raise RequestError(
                    f"output {name!r} holds bytes that are not UTF-8; request it with binary_data"
                ) from None
        out.append(item)
    return out


def encode_http_response(
    model: str,
    version: str,
    request_id: str | None,
    outputs: Mapping[str, np.ndarray],
    binary: Sequence[bool],
) -> tuple[bytes, int | None]:
    """The response body, and the JSON part's length when any output goes as binary."""
    tensors = []
    blobs = []
    for (name, array), as_binary in zip(outputs.items(), binary, strict=True):
        tensor: dict[str, Any] = {
            "name": name,
            "datatype": datatype_of(array.dtype),
            "shape": list(array.shape),
        }
        if as_binary:
            blob = tensor_to_raw(array)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = _json_data(name, array)
        tensors.append(tensor)
    doc: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": tensors}
    if request_id is not None:
        doc["id"] = request_id
    head = json_dumps(doc)
    if not blobs:
        return head, None
    return b"".join([head, *blobs]), len(head)
