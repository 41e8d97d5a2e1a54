"""What the response cache buys ``duh serve`` on a 50% repeat workload: throughput on and off.

The heavy MLP (x[N,256] → three 2048-wide ReLU layers → y[N,10], where the engine dominates) is
served twice, with ``--cache heavy:64M`` and without, and loaded in alternating rounds (closed
loop, batch-1 binary requests, every 7th answer checked against numpy). In each round every
other request repeats one of 64 hot inputs and the rest are inputs never sent before (fresh per
round, so the cache cannot hold them from an earlier round): half the requests can be hits.
Medians of the rounds and their ratio are reported, with the hit rate the server counted.

``python -m benchmarks.serve_cache [--quick] [--json FILE]`` (run it under
``flock /tmp/duh-bench.lock``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._serve_load import Payloads, closed_loop, median
from benchmarks.serve import _free_port, _start, _stop
from fixtures.serve_models import build_artifact, reference

CLIENTS = 8
HOT = 64


def _workload(requests: int, round_index: int, hot: np.ndarray) -> Payloads:
    """Request ``n`` repeats a hot input when ``n`` is even, else sends a new one."""
    fresh = np.random.default_rng(1000 + round_index).standard_normal(
        (requests // 2 + 1, 256)).astype(np.float32)
    rows = np.stack([hot[(n // 2) % HOT] if n % 2 == 0 else fresh[n // 2]
                     for n in range(requests)])
    return Payloads.make(rows, reference("heavy", rows))


def _hit_rate(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as response:
        text = response.read().decode()
    counts = {}
    for kind in ("hits", "misses"):
        match = re.search(rf'duh_response_cache_{kind}_total{{model="heavy",version="1"}} (\S+)',
                          text)
        counts[kind] = float(match[1]) if match else 0.0
    total = counts["hits"] + counts["misses"]
    return counts["hits"] / total if total else 0.0


async def _rounds(urls: dict[str, str], requests: int, rounds: int) -> dict[str, list[float]]:
    hot = np.random.default_rng(7).standard_normal((HOT, 256)).astype(np.float32)
    per: dict[str, list[float]] = {k: [] for k in urls}
    warm = _workload(requests // 4, -1, hot)
    for url in urls.values():
        await closed_loop(url, warm, len(warm.inputs), CLIENTS, True)
    for i in range(rounds):
        payloads = _workload(requests, i, hot)
        order = list(urls) if i % 2 == 0 else list(reversed(urls))
        for kind in order:
            result = await closed_loop(urls[kind], payloads, requests, CLIENTS, True,
                                       check_every=7)
            if result.wrong or result.ok != requests:
                raise SystemExit(f"{kind}: {result.summary()}")
            per[kind].append(round(result.throughput, 1))
    return per


def main(argv: list[str] | None = None) -> None:
    """Measure and print medians and the ratio (JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    requests, rounds = (800, 3) if args.quick else (2000, 5)
    artifact = build_artifact("heavy")
    ports = {"cache_on": _free_port(), "cache_off": _free_port()}
    serve = [sys.executable, "-c", "from duh.cli import main; main()", "serve",
             f"heavy={artifact}"]
    procs = {
        "cache_on": _start([*serve, "--port", str(ports["cache_on"]), "--cache", "heavy:64M"],
                           ports["cache_on"]),
        "cache_off": _start([*serve, "--port", str(ports["cache_off"])], ports["cache_off"]),
    }
    try:
        urls = {k: f"http://127.0.0.1:{p}/v2/models/heavy/infer" for k, p in ports.items()}
        print(f"heavy MLP, {CLIENTS} clients, {requests} binary requests x {rounds} rounds, "
              "50% repeats of 64 hot inputs, cache on/off alternating", flush=True)
        per = asyncio.run(_rounds(urls, requests, rounds))
        hit_rate = _hit_rate(ports["cache_on"])
    finally:
        codes = {k: _stop(p) for k, p in procs.items()}
    on, off = median(per["cache_on"]), median(per["cache_off"])
    results: dict[str, Any] = {
        "cpus": os.cpu_count(), "clients": CLIENTS, "requests": requests, "rounds": rounds,
        "repeat_share": 0.5, "hot_inputs": HOT,
        "cache_on_req_per_s": on, "cache_off_req_per_s": off,
        "ratio_on_vs_off": round(on / off, 3), "hit_rate": round(hit_rate, 4),
        "rounds_req_per_s": per, "exit_codes": codes,
    }
    print(f"  cache on  {on:8.1f} req/s  rounds {per['cache_on']}")
    print(f"  cache off {off:8.1f} req/s  rounds {per['cache_off']}")
    print(f"  ratio on/off {results['ratio_on_vs_off']:.2f}; hit rate {hit_rate:.1%}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
