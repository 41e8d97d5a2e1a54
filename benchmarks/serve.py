"""duh serve against a plain aiohttp + onnxruntime server (no batching), measured in one run.

    python -m benchmarks.serve            # full run (a few minutes)
    python -m benchmarks.serve --quick    # short run
    python -m benchmarks.serve --json out.json

Models (fixtures/serve_models.py): ``heavy`` x[N,256] → 3×2048 ReLU → y[N,10], where batching
pays, and ``light`` x[N,256] → 1024 → y[N,10], where HTTP and JSON dominate. Client: one aiohttp
process, 16 concurrent callers sending batch-1 V2 requests on loopback; client and servers share
the machine's cores. Rounds alternate between the servers; the report gives medians over rounds
and ratios against the plain server. Also: latency at 1 client against the in-process engine
call, p99 under 16 clients, and an open-loop overload at 5x the sustainable rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._serve_load import Payloads, closed_loop, median, open_loop, percentile
from fixtures.serve_models import build_artifact, reference

CLIENTS = 16


# -- the plain baseline server --------------------------------------------------------------

def plain_server(port: int, models: dict[str, str]) -> None:
    """A plain single-process aiohttp + onnxruntime V2 JSON server: one request, one run."""
    import onnxruntime as ort
    from aiohttp import web

    sessions = {n: ort.InferenceSession(p, providers=["CPUExecutionProvider"])
                for n, p in models.items()}
    names = {n: [o.name for o in s.get_outputs()] for n, s in sessions.items()}

    async def infer(request: web.Request) -> web.Response:
        name = request.match_info["model"]
        doc = await request.json()
        feed = {t["name"]: np.asarray(t["data"], dtype=np.float32).reshape(t["shape"])
                for t in doc["inputs"]}
        outs = sessions[name].run(None, feed)
        reply: dict[str, Any] = {"model_name": name, "outputs": [
            {"name": n, "datatype": "FP32", "shape": list(a.shape), "data": a.ravel().tolist()}
            for n, a in zip(names[name], outs, strict=True)]}
        if "id" in doc:
            reply["id"] = doc["id"]
        return web.json_response(reply)

    app = web.Application()
    app.router.add_post("/v2/models/{model}/infer", infer)
    app.router.add_get("/v2/health/ready", lambda r: _ok())
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


async def _ok() -> Any:
    from aiohttp import web

    return web.Response()


# -- process handling -----------------------------------------------------------------------

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(proc: subprocess.Popen[bytes], port: int, timeout_s: float = 60.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready:\n{err}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"server on port {port} not ready within {timeout_s}s")


def _start(cmd: list[str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_ready(proc, port)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


# -- measurements ---------------------------------------------------------------------------

def _engine_p50_ms(artifact: Path, x: np.ndarray, runs: int) -> float:
    import duh
    from duh.runtime import measure_interleaved

    session = duh.load(artifact)
    feeds = [{"x": x[i : i + 1]} for i in range(len(x))]
    timings = measure_interleaved([session.run], feeds, warmup=20, rounds=runs, max_rounds=runs)
    return percentile(list(timings.samples_ms[0]), 50)


async def _throughput(urls: dict[str, str], payloads: Payloads, requests: int, rounds: int,
                      warmup: int) -> dict[str, Any]:
    """Interleaved rounds: duh JSON, plain JSON, duh binary; medians and the last round's p99."""
    kinds = [("duh_json", urls["duh"], False), ("plain_json", urls["plain"], False),
             ("duh_binary", urls["duh"], True)]
    for _, url, binary in kinds:
        await closed_loop(url, payloads, warmup, CLIENTS, binary)
    per: dict[str, list[dict[str, Any]]] = {k: [] for k, _, _ in kinds}
    for _ in range(rounds):
        for kind, url, binary in kinds:
            result = await closed_loop(url, payloads, requests, CLIENTS, binary, check_every=7)
            per[kind].append(result.summary())
    out: dict[str, Any] = {}
    for kind, results in per.items():
        out[kind] = {
            "req_per_s": round(median([r["req_per_s"] for r in results]), 1),
            "p50_ms": round(median([r["p50_ms"] for r in results]), 3),
            "p99_ms": round(median([r["p99_ms"] for r in results]), 3),
            "wrong": sum(r["wrong"] for r in results),
            "errors": sum(r["shed_503"] + sum(r["other"].values()) for r in results),
            "rounds": [r["req_per_s"] for r in results],
        }
    plain = out["plain_json"]["req_per_s"]
    out["ratio_duh_json_vs_plain"] = round(out["duh_json"]["req_per_s"] / plain, 3)
    out["ratio_duh_binary_vs_plain"] = round(out["duh_binary"]["req_per_s"] / plain, 3)
    return out


async def _latency_1_client(url: str, payloads: Payloads, requests: int) -> dict[str, float]:
    result = await closed_loop(url, payloads, requests, 1, False)
    return {"p50_ms": round(percentile(result.latencies_ms, 50), 3),
            "p99_ms": round(percentile(result.latencies_ms, 99), 3)}


def main(argv: list[str] | None = None) -> None:
    """Run every comparison and print medians and ratios (JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run: 1 round, fewer requests")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--plain-server", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-arg", action="append", default=[],
                        help="extra argument for duh serve (repeatable)")
    args = parser.parse_args(argv)
    if args.plain_server:
        plain_server(args.port, dict(a.split("=", 1) for a in args.plain_server))
        return

    requests, rounds, warmup = (600, 1, 200) if args.quick else (2000, 3, 500)
    overload_s = 3.0 if args.quick else 10.0
    artifacts = {name: build_artifact(name) for name in ("heavy", "light")}
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((256, 256)).astype(np.float32)
    payloads = {n: Payloads.make(inputs, reference(n, inputs)) for n in artifacts}
    duh_port, plain_port = _free_port(), _free_port()
    exe = [sys.executable]
    duh_cmd = [*exe, "-c", "from duh.cli import main; main()", "serve",
               *(f"{n}={p}" for n, p in artifacts.items()),
               "--port", str(duh_port), *args.serve_arg]
    models = {n: str(p / json.loads((p / "manifest.json").read_text())["engine_config"]["model"])
              for n, p in artifacts.items()}
    plain_cmd = [*exe, "-m", "benchmarks.serve", "--port", str(plain_port), "--plain-server",
                 *(f"{n}={p}" for n, p in models.items())]
    results: dict[str, Any] = {"cpus": os.cpu_count(), "clients": CLIENTS, "requests": requests,
                               "rounds": rounds, "duh_serve_args": args.serve_arg}
    duh_proc = _start(duh_cmd, duh_port)
    plain_proc = _start(plain_cmd, plain_port)
    try:
        for name in ("heavy", "light"):
            urls = {k: f"http://127.0.0.1:{p}/v2/models/{name}/infer"
                    for k, p in (("duh", duh_port), ("plain", plain_port))}
            print(f"[{name}] throughput, {CLIENTS} clients, {requests} requests x {rounds} rounds",
                  flush=True)
            results[name] = asyncio.run(
                _throughput(urls, payloads[name], requests, rounds, warmup))
            engine = _engine_p50_ms(artifacts[name], inputs, 300 if args.quick else 1000)
            one = asyncio.run(_latency_1_client(urls["duh"], payloads[name],
                                                300 if args.quick else 1000))
            plain_one = asyncio.run(_latency_1_client(urls["plain"], payloads[name],
                                                      300 if args.quick else 1000))
            results[name]["latency_1_client"] = {
                "engine_in_process_p50_ms": round(engine, 3), "duh": one, "plain": plain_one,
                "duh_added_p50_ms": round(one["p50_ms"] - engine, 3)}
            _print_model(name, results[name])
        sustainable = results["heavy"]["duh_json"]["req_per_s"]
        url = f"http://127.0.0.1:{duh_port}/v2/models/heavy/infer"
        print(f"[overload] heavy at 5x {sustainable:.0f} req/s for {overload_s:.0f}s", flush=True)
        overload = asyncio.run(open_loop(url, payloads["heavy"], 5 * sustainable, overload_s))
        results["overload"] = {"offered_req_per_s": round(5 * sustainable, 1),
                               **overload.summary(),
                               "achieved_send_rate": round(overload.sent / overload.seconds, 1)}
        print("  " + json.dumps(results["overload"]), flush=True)
    finally:
        results["duh_exit_code"] = _stop(duh_proc)
        _stop(plain_proc)
    print(f"duh serve exit code after SIGTERM: {results['duh_exit_code']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def _print_model(name: str, r: dict[str, Any]) -> None:
    for kind in ("plain_json", "duh_json", "duh_binary"):
        k = r[kind]
        print(f"  {kind:11s} {k['req_per_s']:8.1f} req/s  p50 {k['p50_ms']:7.3f} ms  "
              f"p99 {k['p99_ms']:7.3f} ms  wrong {k['wrong']}  errors {k['errors']}  "
              f"rounds {k['rounds']}")
    print(f"  duh/plain: json {r['ratio_duh_json_vs_plain']:.2f}x, "
          f"binary {r['ratio_duh_binary_vs_plain']:.2f}x")
    lat = r["latency_1_client"]
    print(f"  1 client: engine p50 {lat['engine_in_process_p50_ms']:.3f} ms, duh p50 "
          f"{lat['duh']['p50_ms']:.3f} ms (+{lat['duh_added_p50_ms']:.3f}), plain p50 "
          f"{lat['plain']['p50_ms']:.3f} ms", flush=True)


if __name__ == "__main__":
    main()
