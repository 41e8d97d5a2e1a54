"""Load generation for benchmarks/serve.py: an aiohttp client, closed- and open-loop.

Kept apart from the benchmark's orchestration so the plain baseline server and the client can
be read on their own. Every request carries a distinct input and id; answers are checked.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp
import numpy as np

__all__ = ["LoadResult", "Payloads", "closed_loop", "open_loop", "percentile"]

HEADER = "Inference-Header-Content-Length"


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of ``values`` (nan when empty)."""
    return float(np.percentile(values, q)) if values else float("nan")


@dataclass
class Payloads:
    """Request bodies for a pool of distinct inputs, in JSON and in Triton's binary form."""

    inputs: np.ndarray  # [pool, 256] float32
    expected: np.ndarray  # [pool, 10] float32
    json_bodies: list[bytes] = field(default_factory=list)
    binary_bodies: list[tuple[bytes, int]] = field(default_factory=list)

    @classmethod
    def make(cls, inputs: np.ndarray, expected: np.ndarray) -> Payloads:
        """Encode each row as a batch-1 request both ways."""
        payloads = cls(inputs, expected)
        for row in inputs:
            doc = {"inputs": [{"name": "x", "shape": [1, row.size], "datatype": "FP32",
                               "data": row.tolist()}]}
            payloads.json_bodies.append(json.dumps(doc).encode())
            head = json.dumps({
                "inputs": [{"name": "x", "shape": [1, row.size], "datatype": "FP32",
                            "parameters": {"binary_data_size": row.nbytes}}],
                "parameters": {"binary_data_output": True},
            }).encode()
            payloads.binary_bodies.append((head + row.astype("<f4").tobytes(), len(head)))
        return payloads


@dataclass
class LoadResult:
    """What a load run saw: counts by outcome and latencies of the answered requests."""

    sent: int = 0
    ok: int = 0
    shed: int = 0  # 503
    other: dict[str, int] = field(default_factory=dict)
    wrong: int = 0
    duplicated: int = 0
    lost: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        """Answered requests per second."""
        return self.ok / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, float | int | dict[str, int]]:
        """The numbers a report quotes."""
        lat = self.latencies_ms
        return {
            "sent": self.sent, "ok": self.ok, "shed_503": self.shed, "other": self.other,
            "wrong": self.wrong, "duplicated": self.duplicated, "lost": self.lost,
            "seconds": round(self.seconds, 3), "req_per_s": round(self.throughput, 1),
            "p50_ms": round(percentile(lat, 50), 3), "p99_ms": round(percentile(lat, 99), 3),
            "max_ms": round(max(lat), 3) if lat else float("nan"),
        }


def _output(body: bytes, header: str | None) -> tuple[str | None, np.ndarray]:
    if header is None:
        doc = json.loads(body)
        return doc.get("id"), np.asarray(doc["outputs"][0]["data"], dtype=np.float32)
    size = int(header)
    doc = json.loads(body[:size])
    return doc.get("id"), np.frombuffer(body[size:], dtype="<f4")


async def _send(
    session: aiohttp.ClientSession, url: str, payloads: Payloads, index: int, binary: bool,
    request_id: str | None,
) -> tuple[int, bytes, str | None]:
    if binary:
        body, size = payloads.binary_bodies[index]
        headers = {HEADER: str(size), "Content-Type": "application/octet-stream"}
    else:
        body, headers = payloads.json_bodies[index], {"Content-Type": "application/json"}
    if request_id is not None:  # splice the id into the JSON without re-encoding the tensor
        body = b'{"id":"' + request_id.encode() + b'",' + body[1:]
        if binary:
            headers[HEADER] = str(size + len(request_id) + 8)
    async with session.post(url, data=body, headers=headers) as response:
        return response.status, await response.read(), response.headers.get(HEADER)


def _check(result: LoadResult, payloads: Payloads, index: int, body: bytes, header: str | None,
           request_id: str | None, seen: set[str]) -> None:
    got_id, values = _output(body, header)
    if request_id is not None:
        if got_id in seen:
            result.duplicated += 1
        seen.add(str(got_id))
        if got_id != request_id:
            result.wrong += 1
            return
    if not np.allclose(values, payloads.expected[index], rtol=1e-3, atol=1e-4):
        result.wrong += 1


async def closed_loop(
    url: str, payloads: Payloads, requests: int, clients: int, binary: bool = False,
    check_every: int = 1,
) -> LoadResult:
    """``clients`` callers, each sending its next request as soon as the last one is answered."""
    result = LoadResult()
    counter = iter(range(requests))
    pool = len(payloads.inputs)
    seen: set[str] = set()
    connector = aiohttp.TCPConnector(limit=clients, force_close=False)

    async def caller(session: aiohttp.ClientSession) -> None:
        for n in counter:
            index = n % pool
            request_id = f"r{n}" if n % check_every == 0 else None
            t0 = time.perf_counter()
            status, body, header = await _send(session, url, payloads, index, binary, request_id)
            result.sent += 1
            if status == 200:
                result.latencies_ms.append((time.perf_counter() - t0) * 1000)
                result.ok += 1
                if request_id is not None:
                    _check(result, payloads, index, body, header, request_id, seen)
            elif status == 503:
                result.shed += 1
            else:
                result.other[str(status)] = result.other.get(str(status), 0) + 1

    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(caller(session) for _ in range(clients)))
        result.seconds = time.perf_counter() - started
    return result


async def open_loop(
    url: str, payloads: Payloads, rate: float, seconds: float, max_outstanding: int = 512,
    timeout_s: float = 30.0,
) -> LoadResult:
    """Send at ``rate`` req/s for ``seconds`` whatever the answers (bounded outstanding)."""
    result = LoadResult()
    pool = len(payloads.inputs)
    seen: set[str] = set()
    slots = asyncio.Semaphore(max_outstanding)
    connector = aiohttp.TCPConnector(limit=max_outstanding)
    tasks: list[asyncio.Task[None]] = []
    skipped = 0

    async def one(session: aiohttp.ClientSession, n: int) -> None:
        index = n % pool
        request_id = f"o{n}"
        t0 = time.perf_counter()
        try:
            status, body, header = await _send(session, url, payloads, index, False, request_id)
        except (aiohttp.ClientError, TimeoutError):
            result.lost += 1
            return
        finally:
            slots.release()
        if status == 200:
            result.latencies_ms.append((time.perf_counter() - t0) * 1000)
            result.ok += 1
            _check(result, payloads, index, body, header, request_id, seen)
        elif status == 503:
            result.shed += 1
        else:
            result.other[str(status)] = result.other.get(str(status), 0) + 1

    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        total = int(rate * seconds)
        for n in range(total):
            due = started + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if slots.locked():  # the client cannot keep more in flight: count it as not sent
                skipped += 1
                continue
            await slots.acquire()
            result.sent += 1
            tasks.append(asyncio.create_task(one(session, n)))
        await asyncio.gather(*tasks)
        result.seconds = time.perf_counter() - started
    result.other["client_skipped"] = skipped
    return result


def median(values: Sequence[float]) -> float:
    """The median, for round-by-round results."""
    return statistics.median(values) if values else float("nan")
