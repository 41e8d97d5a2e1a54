"""What drift monitoring costs ``duh serve`` on a light model: throughput with it on and off.

The light MLP (x[N,256] → 1024 ReLU → y[N,10], where HTTP dominates) is built with 512 rows of
check data, so its artifact records reference deciles of all 256 features: each live request is
binned per feature, the most work drift does per row. Two servers of the same artifact, one
with drift on (the default, ``--drift-window 1024``) and one with ``--drift-window 0``, are
loaded in alternating rounds (closed loop, batch-1 binary requests, every 7th answer checked);
per round, throughput and the server's CPU time per request (``/proc/PID/stat``, which
the other load on a shared machine disturbs far less than throughput); the medians of the
rounds' on/off ratios are reported. Also: the monitor's own time per request, in process.
``--control`` runs both servers with drift off: the noise floor of the ratios.

``python -m benchmarks.serve_drift [--quick] [--json FILE]`` (run it under
``flock /tmp/duh-bench.lock``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._serve_load import Payloads, closed_loop, median
from benchmarks.serve import _free_port, _start, _stop
from fixtures.serve_models import cache_root, reference, write_model

CLIENTS = 8


def _artifact() -> Path:
    """The light MLP built with real-looking check data (reference statistics recorded)."""
    import duh

    root = cache_root() / "drift"
    out = root / "light-drift.duh"
    if (out / "datastats.json").is_file():
        return out
    model = write_model("light", root / "light.onnx")
    data = root / "check.npz"
    np.savez(data, x=np.random.default_rng(1).standard_normal((512, 256)).astype(np.float32))
    duh.build(model, "onnxruntime:cpu-fp32", out, check_data=data, check_samples=512)
    return out


def _in_process_us(artifact: Path, inputs: np.ndarray, requests: int) -> float:
    """Microseconds per batch-1 request that the drift monitor takes (observe and binning)."""
    from prometheus_client import CollectorRegistry

    from duh.serve import DriftConfig
    from duh.serve._drift import DriftMonitors

    drift = DriftMonitors(DriftConfig(), CollectorRegistry())
    rows = [inputs[i % len(inputs)][None] for i in range(requests)]
    drift.observe("light", "1", artifact, "a", {"x": rows[0]})  # reads the reference once
    started = time.perf_counter()
    for row in rows:
        drift.observe("light", "1", artifact, "a", {"x": row})
    drift.flush()
    return (time.perf_counter() - started) / requests * 1e6


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system, every thread) a process has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _rounds(urls: dict[str, str], pids: dict[str, int], payloads: Payloads,
                  requests: int, rounds: int) -> dict[str, dict[str, list[float]]]:
    """Per server: throughput (req/s) and server CPU per request (us) of each round."""
    per: dict[str, dict[str, list[float]]] = {k: {"req_per_s": [], "cpu_us": []} for k in urls}
    for url in urls.values():
        await closed_loop(url, payloads, requests // 2, CLIENTS, True)  # warm-up
    for i in range(rounds):
        order = list(urls) if i % 2 == 0 else list(reversed(urls))
        for kind in order:
            cpu = _cpu_s(pids[kind])
            result = await closed_loop(urls[kind], payloads, requests, CLIENTS, True,
                                       check_every=7)
            if result.wrong or result.ok != requests:
                raise SystemExit(f"{kind}: {result.summary()}")
            per[kind]["req_per_s"].append(round(result.throughput, 1))
            per[kind]["cpu_us"].append(round((_cpu_s(pids[kind]) - cpu) / requests * 1e6, 1))
    return per


def main(argv: list[str] | None = None) -> None:
    """Measure and print medians and the ratio (JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--control", action="store_true",
                        help="A/A run: both servers with drift off (the noise floor of the ratio)")
    args = parser.parse_args(argv)
    # Many short rounds, on and off back to back: on a shared machine the load moves between
    # rounds, so each pair's ratio is the measurement and their median the result.
    requests, rounds = (600, 15) if args.quick else (1000, 31)
    artifact = _artifact()
    inputs = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    payloads = Payloads.make(inputs, reference("light", inputs))
    ports = {"drift_on": _free_port(), "drift_off": _free_port()}
    serve = [sys.executable, "-c", "from duh.cli import main; main()", "serve",
             f"light={artifact}"]
    procs = {
        "drift_on": _start([*serve, "--port", str(ports["drift_on"]),
                            *(["--drift-window", "0"] if args.control else [])],
                           ports["drift_on"]),
        "drift_off": _start([*serve, "--port", str(ports["drift_off"]), "--drift-window", "0"],
                            ports["drift_off"]),
    }
    try:
        urls = {k: f"http://127.0.0.1:{p}/v2/models/light/infer" for k, p in ports.items()}
        print(f"light MLP, {CLIENTS} clients, {requests} binary requests x {rounds} rounds, "
              "drift on/off alternating", flush=True)
        pids = {k: p.pid for k, p in procs.items()}
        per = asyncio.run(_rounds(urls, pids, payloads, requests, rounds))
        # The drift server really monitored: its stats carry a drift entry with rows seen.
        import urllib.request

        stats_url = f"http://127.0.0.1:{ports['drift_on']}/v2/models/light/stats"
        with urllib.request.urlopen(stats_url) as response:
            entry = json.loads(response.read())["model_stats"][0]
        drift = entry["drift"]["inputs"]["x"] if "drift" in entry else None
    finally:
        codes = {k: _stop(p) for k, p in procs.items()}
    on, off = per["drift_on"], per["drift_off"]
    ratios = [a / b for a, b in zip(on["req_per_s"], off["req_per_s"], strict=True)]
    cpu_ratios = [a / b for a, b in zip(on["cpu_us"], off["cpu_us"], strict=True)]
    micro = _in_process_us(artifact, inputs, 20000)
    cpu_off = median(off["cpu_us"])
    results: dict[str, Any] = {
        "cpus": os.cpu_count(), "clients": CLIENTS, "requests": requests, "rounds": rounds,
        "control": args.control,
        "drift_on_req_per_s": median(on["req_per_s"]),
        "drift_off_req_per_s": median(off["req_per_s"]),
        "throughput_ratio_on_vs_off": round(median(ratios), 4),
        "drift_on_server_cpu_us_per_request": median(on["cpu_us"]),
        "drift_off_server_cpu_us_per_request": cpu_off,
        "server_cpu_ratio_on_vs_off": round(median(cpu_ratios), 4),
        "monitor_us_per_request": round(micro, 2),
        "monitor_share_of_server_cpu_pct": round(micro / cpu_off * 100, 2),
        "rounds_detail": per, "drift_rows_seen": drift["rows_seen"] if drift else 0,
        "drift_psi": drift["psi"] if drift else None, "exit_codes": codes,
    }
    for kind, r in per.items():
        print(f"  {kind:9s} {median(r['req_per_s']):8.1f} req/s (median)  server CPU "
              f"{median(r['cpu_us']):7.1f} us/request  rounds {r['req_per_s']}")
    print(f"  on/off, median of the rounds' ratios: throughput "
          f"{results['throughput_ratio_on_vs_off']:.3f}, server CPU per request "
          f"{results['server_cpu_ratio_on_vs_off']:.3f}; the monitor in process: {micro:.1f} "
          f"us/request = {results['monitor_share_of_server_cpu_pct']:.2f}% of the server's CPU "
          "per request")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
