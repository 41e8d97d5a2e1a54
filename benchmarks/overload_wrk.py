"""Overload ``duh serve`` with ``wrk`` (a C load generator) and check every answer.

Needs ``wrk`` on the PATH (Debian: ``apt-get install -y wrk``); a project command, not a CI test.
Serves a model whose answer, y = 2x, is exact in any batch (so every 200 is compared byte for
byte with the answer to the same request sent alone) beside two MatMuls of work per row that
the requests do not ask for, with a small queue, then:

1. the sustainable rate: ``wrk`` with ``--sustain-connections`` connections (no 503 expected);
2. overload: ``--connections`` connections, each sending its next request as soon as the last
   is answered; the offered rate is every request answered per second, 503s included.

A Lua script counts statuses, 200s whose body differs from the expected one, and 503s without
Retry-After. The server's own histogram of successful requests gives their p99 (a bucket's
upper bound); its RSS is sampled before and after.

    python -m benchmarks.overload_wrk [--seconds S] [--connections N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

_LUA = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[%BODY%]]
local expected = [[%EXPECTED%]]
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok = 0; wrong = 0; busy = 0; noretry = 0; other = 0 end
function response(status, headers, body)
  if status == 200 then
    if body == expected then ok = ok + 1 else wrong = wrong + 1 end
  elseif status == 503 then
    busy = busy + 1
    if headers["Retry-After"] == nil then noretry = noretry + 1 end
  else other = other + 1 end
end
function done(summary, latency, requests)
  local t = {ok = 0, wrong = 0, busy = 0, noretry = 0, other = 0}
  for _, th in ipairs(threads) do
    for k, _ in pairs(t) do t[k] = t[k] + th:get(k) end
  end
  io.write(string.format(
    "DUH {\"ok\": %d, \"wrong\": %d, \"busy\": %d, \"noretry\": %d, \"other\": %d, " ..
    "\"requests\": %d, \"seconds\": %f, \"errors\": %d, \"p99_all_us\": %d}\n",
    t.ok, t.wrong, t.busy, t.noretry, t.other, summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout, latency:percentile(99)))
end
"""


def _slow_scale_model(folder: Path, width: int) -> Path:
    """x[N,4] -> y = 2x (exact in any batch) and z, two width x width MatMuls of work per row.

    Requests ask for ``y`` only; ``z`` makes each row cost milliseconds of engine time, so that
    the sustainable rate is the engine's and 503s are cheap beside it.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal((4, width)).astype(np.float32), "w0"),
        numpy_helper.from_array(
            (rng.standard_normal((width, width)) / width).astype(np.float32), "w1"),
        numpy_helper.from_array(
            (rng.standard_normal((width, width)) / width).astype(np.float32), "w2"),
        numpy_helper.from_array(np.array(2.0, np.float32), "two"),
    ]
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["y"]),
        helper.make_node("MatMul", ["x", "w0"], ["h0"]),
        helper.make_node("MatMul", ["h0", "w1"], ["h1"]),
        helper.make_node("MatMul", ["h1", "w2"], ["z"]),
    ]
    graph = helper.make_graph(
        nodes, "slow_scale", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", width])], weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = folder / "slow_scale.onnx"
    onnx.save_model(model, str(path))
    return path


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _p99_ok(metrics: str, before: dict[float, float]) -> tuple[float | None, dict[float, float]]:
    """The upper bound (s) of the bucket holding the p99 of successes since ``before``."""
    buckets: dict[float, float] = {}
    for m in re.finditer(
        r'duh_inference_request_duration_seconds_bucket\{[^}]*le="([^"]+)"[^}]*\} (\S+)', metrics
    ):
        le = float("inf") if m[1] == "+Inf" else float(m[1])
        buckets[le] = buckets.get(le, 0.0) + float(m[2])
    delta = {le: n - before.get(le, 0.0) for le, n in sorted(buckets.items())}
    total = delta.get(float("inf"), 0.0)
    if not total:
        return None, buckets
    return next(le for le, n in delta.items() if n >= 0.99 * total), buckets


def _wrk(url: str, script: Path, connections: int, seconds: int) -> dict[str, Any]:
    threads = min(2, connections)
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout",
         "10s", "-s", str(script), url], capture_output=True, text=True, check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("DUH "))
    return dict(json.loads(line[4:]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=128)
    parser.add_argument("--sustain-connections", type=int, default=2)
    parser.add_argument("--queue", type=int, default=8, help="the server's --max-queue-size")
    parser.add_argument("--width", type=int, default=2048, help="the work per row (MatMul size)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install -y wrk)")
        return 2
    with tempfile.TemporaryDirectory(prefix="duh-overload-") as tmp:
        model = _slow_scale_model(Path(tmp), args.width)
        proc = subprocess.Popen(
            [sys.executable, "-m", "duh", "serve", f"scale={model}", "--port", "0", "--json",
             "--max-queue-size", str(args.queue), "--max-batch-size", "8", "--instances", "1",
             "--threads", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
        )
        try:
            assert proc.stdout is not None
            ready = json.loads(proc.stdout.readline())
            base = ready["http"]
            url = f"{base}/v2/models/scale/infer"
            body = json.dumps({"id": "w", "inputs": [{"name": "x", "datatype": "FP32",
                               "shape": [1, 4], "data": [0.5, -1.25, 3.0, 7.75]}],
                               "outputs": [{"name": "y"}]})
            request = urllib.request.Request(url, body.encode(),
                                             {"Content-Type": "application/json"})
            expected = urllib.request.urlopen(request).read().decode()
            script = Path(tmp) / "check.lua"
            script.write_text(_LUA.replace("%BODY%", body).replace("%EXPECTED%", expected))
            _, hist = _p99_ok(urllib.request.urlopen(f"{base}/metrics").read().decode(), {})
            sustain = _wrk(url, script, args.sustain_connections, max(5, args.seconds // 2))
            rss_before = _rss_kb(proc.pid)
            p99_s, hist = _p99_ok(urllib.request.urlopen(f"{base}/metrics").read().decode(), hist)
            time.sleep(0.5)
            over = _wrk(url, script, args.connections, args.seconds)
            p99_o, _ = _p99_ok(urllib.request.urlopen(f"{base}/metrics").read().decode(), hist)
            rss_after = _rss_kb(proc.pid)
            alive = proc.poll() is None
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    sustained = sustain["ok"] / sustain["seconds"]
    offered = over["requests"] / over["seconds"]
    report = {
        "sustain": sustain, "overload": over, "sustained_rps": round(sustained, 1),
        "offered_rps": round(offered, 1), "offered_x": round(offered / sustained, 2),
        "overload_ok_rps": round(over["ok"] / over["seconds"], 1),
        "p99_ok_s_bucket": {"sustain": p99_s, "overload": p99_o},
        "rss_kb": {"before": rss_before, "after": rss_after}, "server_alive": alive,
    }
    print(f"sustainable: {sustained:.0f} req/s with {args.sustain_connections} connections "
          f"(200s {sustain['ok']}, wrong {sustain['wrong']}, 503 {sustain['busy']})")
    print(f"overload: offered {offered:.0f} req/s ({offered / sustained:.1f}x) with "
          f"{args.connections} connections for {over['seconds']:.0f} s: 200s {over['ok']} "
          f"(wrong {over['wrong']}), 503 {over['busy']} (without Retry-After "
          f"{over['noretry']}), other {over['other']}, socket errors {over['errors']}")
    print(f"p99 of accepted requests (server histogram bucket bound): sustain <= {p99_s} s, "
          f"overload <= {p99_o} s; wrk p99 of all answers {over['p99_all_us'] / 1000:.1f} ms")
    print(f"server RSS {rss_before} kB before overload, {rss_after} kB after; "
          f"alive {alive}")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    bad = over["wrong"] or sustain["wrong"] or over["noretry"] or over["other"] or not alive
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
