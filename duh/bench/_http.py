"""``--url``: a model behind an Open Inference Protocol server (duh serve, Triton) as a subject.

Requests are encoded once, before timing (JSON, or Triton's binary tensor extension), and sent
over persistent HTTP/1.1 connections from a pool, one per request in flight. The latency is the
client's: from sending the request to reading the whole response, as perf_analyzer reports it.
"""

from __future__ import annotations

import http.client
import json
import logging
import queue
import struct
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from duh.bench._inputs import Workload
from duh.bench._loop import Rejected, Runner
from duh.bench._report import SubjectInfo
from duh.errors import ConfigError, InputError, TargetError
from duh.runtime import TensorSpec, check_feed

__all__ = ["OIP_DATATYPES", "HttpSubject", "decode_response", "encode_request"]

log = logging.getLogger(__name__)

# Open Inference Protocol tensor datatypes and their numpy dtypes.
OIP_DATATYPES = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": "object",
}
_TO_OIP = {v: k for k, v in OIP_DATATYPES.items()}
_HEADER_LENGTH = "Inference-Header-Content-Length"
_OVERLOADED = (429, 503)


def _bytes_tensor(array: np.ndarray) -> bytes:
    parts = []
    for item in array.ravel():
        raw = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(struct.pack("<I", len(raw)) + raw)
    return b"".join(parts)


def encode_request(
    feed: Mapping[str, np.ndarray], outputs: list[str], binary: bool
) -> tuple[bytes, dict[str, str]]:
    """An inference request body and its headers, JSON or with binary tensor data."""
    inputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, array in feed.items():
        entry: dict[str, Any] = {
            "name": name,
            "shape": list(array.shape),
            "datatype": _TO_OIP[array.dtype.name],
        }
        if binary:
            blob = _bytes_tensor(array) if array.dtype.kind == "O" else array.tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            data = array.ravel()
            entry["data"] = [str(x) for x in data] if array.dtype.kind == "O" else data.tolist()
        inputs.append(entry)
    request: dict[str, Any] = {"inputs": inputs}
    if binary:
        request["outputs"] = [{"name": o, "parameters": {"binary_data": True}} for o in outputs]
    header = json.dumps(request, separators=(",", ":")).encode("utf-8")
    if not binary:
        return header, {"Content-Type": "application/json"}
    return header + b"".join(blobs), {
        "Content-Type": "application/octet-stream",
        _HEADER_LENGTH: str(len(header)),
    }


def decode_response(body: bytes, header_length: str | None) -> dict[str, np.ndarray]:
    """The outputs of an inference response (JSON or binary) as numpy arrays."""
    size = int(header_length) if header_length else len(body)
    doc = json.loads(body[:size])
    out: dict[str, np.ndarray] = {}
    offset = size
    for item in doc.get("outputs", []):
        dtype = OIP_DATATYPES.get(item["datatype"], "float32")
        shape = tuple(item["shape"])
        nbytes = item.get("parameters", {}).get("binary_data_size")
        if nbytes is not None:
            raw = body[offset : offset + int(nbytes)]
            offset += int(nbytes)
            out[item["name"]] = np.frombuffer(raw, dtype=dtype).reshape(shape)
        else:
            out[item["name"]] = np.asarray(item["data"], dtype=dtype).reshape(shape)
    return out


class HttpSubject:
    """A model served over the Open Inference Protocol's HTTP/REST binding."""

    def __init__(
        self,
        url: str,
        model: str,
        version: str | None = None,
        binary: bool = True,
        timeout_s: float = 60.0,
    ) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"--url {url!r} is not http://HOST:PORT")
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port
        self._timeout = timeout_s
        self._pool: queue.SimpleQueue[http.client.HTTPConnection] = queue.SimpleQueue()
        self.url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self._base = parts.path.rstrip("/")
        self.model, self.version, self.binary = model, version, binary
        self.name = model if version is None else f"{model}/{version}"
        self._model_path = f"{self._base}/v2/models/{model}" + (
            f"/versions/{version}" if version else ""
        )
        status, doc = self._get("/v2/health/ready", base=True)
        if status != 200:
            raise TargetError(
                f"server at {self.url} is not ready (HTTP {status}); wait for it or check its logs"
            )
        status, doc = self._get("")
        if status != 200:
            message = doc.get("error", "") if isinstance(doc, dict) else ""
            raise ConfigError(
                f"server at {self.url} has no model {self.name!r} (HTTP {status}"
                + (f": {message}" if message else "")
                + "); check --model against the server's models"
            )
        self.metadata = doc
        self.inputs = tuple(self._spec(t) for t in doc.get("inputs", []))
        self.outputs = [str(t["name"]) for t in doc.get("outputs", [])]
        self.platform = str(doc.get("platform", "")) or "unknown"
        self._stats_ok = True

    def _spec(self, item: Mapping[str, Any]) -> TensorSpec:
        datatype = str(item.get("datatype", ""))
        if datatype not in OIP_DATATYPES:
            raise TargetError(
                f"model {self.name!r} input {item.get('name')!r} has datatype {datatype!r}, "
                "which duh bench cannot send"
            )
        shape = tuple(None if int(d) < 0 else int(d) for d in item.get("shape", []))
        return TensorSpec(str(item["name"]), OIP_DATATYPES[datatype], shape)

    def _connection(self) -> http.client.HTTPConnection:
        try:
            return self._pool.get_nowait()
        except queue.Empty:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            return cls(self._host, self._port, timeout=self._timeout)

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes, str | None]:
        for attempt in (0, 1):
            conn = self._connection()
            try:
                conn.request(method, path, body=body, headers=dict(headers or {}))
                response = conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                if attempt:
                    raise TargetError(
                        f"server at {self.url} closed the connection twice in a row"
                    ) from None
                continue  # a kept-alive connection the server had closed: retry on a fresh one
            except OSError as exc:
                conn.close()
                raise ConfigError(
                    f"cannot reach {self.url} ({exc}); is the server running?"
                ) from None
            self._pool.put(conn)
            return response.status, data, response.getheader(_HEADER_LENGTH)
        raise AssertionError("unreachable")

    def _get(self, suffix: str, base: bool = False) -> tuple[int, Any]:
        status, data, _ = self._request("GET", (self._base if base else self._model_path) + suffix)
        try:
            return status, json.loads(data) if data else {}
        except json.JSONDecodeError:
            return status, {}

    def info(self) -> SubjectInfo:
        """The served model as the report shows it."""
        versions = self.metadata.get("versions") or []
        return SubjectInfo(
            name=self.name,
            kind="url",
            location=f"{self.url} model {self.name}",
            engine=self.platform,
            target="served" + (f" (versions {', '.join(map(str, versions))})" if versions else ""),
            threads=None,
            options={"protocol": "binary" if self.binary else "json"},
        )

    def payloads(self, workload: Workload) -> list[Any]:
        """Encoded requests, one per feed; the first is sent once to check the round trip."""
        try:
            feeds = [check_feed(self.inputs, f) for f in workload.feeds]
        except InputError as exc:
            raise InputError(f"{self.name}: {exc}") from None
        payloads = [encode_request(f, self.outputs, self.binary) for f in feeds]
        status, data, length = self._post(payloads[0])
        if status in _OVERLOADED:
            raise TargetError(
                f"server at {self.url} refused the first request as overloaded (HTTP {status}); "
                "benchmark it when it is idle"
            )
        if status != 200:
            self._fail(status, data)
        try:
            got = decode_response(data, length)
        except (ValueError, KeyError, TypeError) as exc:
            raise TargetError(
                f"server at {self.url} sent a malformed inference response ({exc})"
            ) from None
        missing = [o for o in self.outputs if o not in got]
        if missing:
            raise TargetError(f"server's response for {self.name!r} lacks outputs {missing}")
        return payloads

    def _post(self, payload: tuple[bytes, dict[str, str]]) -> tuple[int, bytes, str | None]:
        return self._request("POST", self._model_path + "/infer", payload[0], payload[1])

    def _fail(self, status: int, data: bytes) -> None:
        try:
            message = str(json.loads(data).get("error", ""))
        except (json.JSONDecodeError, AttributeError):
            message = data[:200].decode("utf-8", "replace")
        if status in _OVERLOADED:
            raise Rejected(message)
        cls = InputError if status == 400 else TargetError
        raise cls(f"server at {self.url} answered HTTP {status} for {self.name!r}: {message}")

    def runner(self) -> Runner:
        """Send one encoded request; ``Rejected`` on 429/503, a ``DuhError`` on other failures."""
        post, fail = self._post, self._fail

        def run(payload: tuple[bytes, dict[str, str]]) -> None:
            status, data, _ = post(payload)
            if status != 200:
                fail(status, data)

        return run

    def server_stats(self) -> Mapping[str, Any] | None:
        """Cumulative counters from ``/v2/models/{m}/stats`` (Triton's format), or None."""
        if not self._stats_ok:
            return None
        status, doc = self._get("/stats")
        stats = doc.get("model_stats") if isinstance(doc, dict) else None
        if status != 200 or not stats:
            self._stats_ok = False
            log.info("server at %s offers no model statistics (HTTP %s)", self.url, status)
            return None
        entry = stats[0]
        out: dict[str, Any] = {
            "inference_count": int(entry.get("inference_count", 0)),
            "execution_count": int(entry.get("execution_count", 0)),
            "taken": time.perf_counter(),
        }
        for key, value in (entry.get("inference_stats") or {}).items():
            if isinstance(value, dict):
                out[f"{key}_count"] = int(value.get("count", 0))
                out[f"{key}_ns"] = int(value.get("ns", 0))
        return out

    def close(self) -> None:
        """Close the pooled connections."""
        while True:
            try:
                self._pool.get_nowait().close()
            except queue.Empty:
                return
