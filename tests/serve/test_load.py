"""Under load: overload sheds with 503 and stays right; SIGTERM drains without losing requests."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from pathlib import Path

import aiohttp
import numpy as np

from fixtures.serve_models import reference

X = np.random.default_rng(5).standard_normal((64, 256)).astype(np.float32)
EXPECTED = reference("heavy", X)


def _body(i: int) -> bytes:
    return json.dumps({"id": str(i), "inputs": [{"name": "x", "datatype": "FP32",
                                                 "shape": [1, 256],
                                                 "data": X[i % 64].tolist()}]}).encode()


def _right(i: int, body: bytes) -> bool:
    doc = json.loads(body)
    return doc["id"] == str(i) and np.allclose(doc["outputs"][0]["data"], EXPECTED[i % 64],
                                               rtol=1e-4, atol=1e-5)


def test_overload_sheds_with_503_and_every_answer_is_right(start_server,
                                                           serve_models: dict[str, Path]) -> None:
    server = start_server(f"heavy={serve_models['heavy']}", "--max-queue-size", "8",
                          "--max-batch-size", "4")
    url = f"{server.url}/v2/models/heavy/infer"

    async def burst() -> tuple[Counter[int], list[int], set[str]]:
        statuses: Counter[int] = Counter()
        wrong: list[int] = []
        retry_after: set[str] = set()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=300)) as session:
            async def one(i: int) -> None:
                async with session.post(url, data=_body(i)) as response:
                    body = await response.read()
                    statuses[response.status] += 1
                    if response.status == 200 and not _right(i, body):
                        wrong.append(i)
                    if response.status == 503:
                        retry_after.add(response.headers.get("Retry-After", ""))
                        assert "queued, its limit (--max-queue-size 8)" in json.loads(body)["error"]

            await asyncio.gather(*(one(i) for i in range(300)))
        return statuses, wrong, retry_after

    statuses, wrong, retry_after = asyncio.run(burst())
    assert set(statuses) <= {200, 503} and sum(statuses.values()) == 300
    assert statuses[503] > 0 and statuses[200] > 0
    assert retry_after == {"1"}
    assert not wrong
    # afterwards it serves normally
    for i in range(5):
        status, _, body = server.request("POST", "/v2/models/heavy/infer", _body(i))
        assert status == 200 and _right(i, body)
    assert server.stop() == 0


def test_sigterm_under_load_answers_every_accepted_request(start_server,
                                                           serve_models: dict[str, Path]) -> None:
    # A queue delay keeps many requests waiting in the queue at the moment the signal lands.
    server = start_server(f"heavy={serve_models['heavy']}", "--max-queue-delay-ms", "50",
                          "--max-batch-size", "64", "--drain-timeout", "20")
    url = f"{server.url}/v2/models/heavy/infer"
    outcomes: list[tuple[float, float, str, bool]] = []  # (sent, done, outcome, right)
    signalled: list[float] = []
    answered = [0]

    async def caller(session: aiohttp.ClientSession, first: int, warm: asyncio.Event,
                     gone: asyncio.Event) -> None:
        i = first
        while not gone.is_set():
            sent = time.monotonic()
            try:
                async with session.post(url, data=_body(i)) as response:
                    body = await response.read()
                    outcome = str(response.status)
                    right = response.status != 200 or _right(i, body)
            except aiohttp.ClientConnectionError:
                outcome, right = "connection", True
                if signalled:  # the server has closed its doors: this caller is done
                    gone.set()
            outcomes.append((sent, time.monotonic(), outcome, right))
            answered[0] += outcome == "200"
            if answered[0] >= 64:
                warm.set()
            i += 32

    async def main() -> None:
        warm, gone = asyncio.Event(), asyncio.Event()
        async with aiohttp.ClientSession() as session:
            tasks = [asyncio.create_task(caller(session, k, warm, gone)) for k in range(32)]
            # signal once the server has answered 64 requests, with 32 callers still sending
            await asyncio.wait_for(warm.wait(), 60)
            signalled.append(time.monotonic())
            server.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(asyncio.gather(*tasks), 60)

    asyncio.run(main())
    assert server.proc.wait(30) == 0, server.log()
    assert "every accepted request was answered" in server.log()
    at = signalled[0]
    assert all(right for *_, right in outcomes)
    assert {o for _, _, o, _ in outcomes} <= {"200", "503", "connection"}
    # requests sent before the signal were answered (200) or cleanly refused (503), never cut off
    assert all(o in ("200", "503") for sent, _, o, _ in outcomes if sent < at)
    # and requests still queued when it landed were finished after it
    assert sum(1 for sent, done, o, _ in outcomes if sent < at < done and o == "200") > 0
    assert sum(1 for *_, o, _ in outcomes if o == "200") > 50


def test_sigint_stops_cleanly(start_server, serve_models: dict[str, Path]) -> None:
    server = start_server(f"light={serve_models['light']}")
    assert server.request("GET", "/v2/health/ready")[0] == 200
    assert server.stop(signal.SIGINT) == 0
    assert "every accepted request was answered" in server.log()
