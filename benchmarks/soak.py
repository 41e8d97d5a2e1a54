"""Soak ``duh serve``: mixed traffic, loads/unloads and bad requests; RSS and open fds sampled.

Serves a repository (``scale``: y = 2x, a plain .onnx version) with ``--model-control explicit``
and an admin key. Client threads send valid requests (each answer checked), bad ones (malformed
JSON, wrong dtype, unknown model, shapes past ``--max-elements``, a wrong API key), and unload
and load the model every few seconds. The server's RSS and open file descriptors are sampled;
the report gives their growth per hour (a least-squares slope after a warm-up) and every
answer that was not what it should be.

    python -m benchmarks.soak [--minutes M] [--json FILE]      # the issue's soak: --minutes 20
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ADMIN = "soak-admin-key-0123456789"
API = "soak-api-key-0123456789"


def _sample(pid: int) -> tuple[int, int]:
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def _slope_per_hour(points: Sequence[tuple[float, float]]) -> float:
    if len(points) < 2:
        return 0.0
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    return 0.0 if var == 0 else 3600.0 * sum((t - mt) * (v - mv) for t, v in points) / var


def _post(host: str, port: int, path: str, body: bytes, headers: dict[str, str]
          ) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json", **headers})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _traffic(host: str, port: int, stop: threading.Event, seen: Counter[str], kind: str) -> None:
    auth = {"authorization": f"Bearer {API}"}
    i = 0
    while not stop.is_set():
        i += 1
        if kind == "good":
            x = [float(i % 7), -1.5, 2.25]
            doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": x}]}
            status, body = _post(host, port, "/v2/models/scale/infer",
                                 json.dumps(doc).encode(), auth)
            if status == 200:
                ok = json.loads(body)["outputs"][0]["data"] == [2 * v for v in x]
                seen["200 ok" if ok else "200 WRONG"] += 1
            else:
                text = json.loads(body).get("error", "") if body else ""
                expected = status in (404, 503) and ("unknown model" in text or status == 503)
                seen[f"{status} {'(unloaded)' if expected else 'UNEXPECTED ' + text[:60]}"] += 1
        elif kind == "bad":
            bad = [
                (b"{not json", auth),
                (json.dumps({"inputs": [{"name": "x", "datatype": "INT8", "shape": [1, 3],
                                         "data": [1, 2, 3]}]}).encode(), auth),
                (json.dumps({"inputs": [{"name": "x", "datatype": "FP32",
                                         "shape": [1, 2000], "data": [0.0] * 2000}]}).encode(),
                 auth),
                (b"{}", {"authorization": "Bearer wrong"}),
            ][i % 4]
            path = "/v2/models/nope/infer" if i % 5 == 0 else "/v2/models/scale/infer"
            status, _ = _post(host, port, path, *bad)
            seen[f"bad -> {status}" if status in (400, 401, 404, 503) else f"bad -> {status}!"] += 1
        else:
            time.sleep(2.0)
            for action in ("unload", "load"):
                status, _ = _post(host, port, f"/v2/repository/models/scale/{action}", b"{}",
                                  {"admin-key": ADMIN})
                seen[f"{action} {status}"] += 1
                time.sleep(0.5)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds left out of slopes")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    from fixtures.serve_models import write_small_models

    with tempfile.TemporaryDirectory(prefix="duh-soak-") as tmp:
        version = Path(tmp) / "repo" / "scale" / "1"
        version.mkdir(parents=True)
        model = write_small_models(Path(tmp))["scale"]
        (version / "model.onnx").write_bytes(model.read_bytes())
        env = {**os.environ, "DUH_ADMIN_KEY": ADMIN, "DUH_API_KEY": API}
        proc = subprocess.Popen(
            [sys.executable, "-m", "duh", "serve", "--repository", str(version.parent.parent),
             "--port", "0", "--json", "--model-control", "explicit", "--max-elements", "1000",
             "--instances", "1", "--threads", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=ROOT,
        )
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        host, port = ready["http"].removeprefix("http://").split(":")
        stop = threading.Event()
        seen: Counter[str] = Counter()
        threads = [threading.Thread(target=_traffic, args=(host, int(port), stop, seen, k))
                   for k in ("good", "good", "bad", "admin")]
        for t in threads:
            t.start()
        started = time.monotonic()
        samples: list[tuple[float, int, int]] = []
        try:
            while (now := time.monotonic() - started) < args.minutes * 60:
                samples.append((now, *_sample(proc.pid)))
                time.sleep(args.every)
        finally:
            stop.set()
            for t in threads:
                t.join(60)
            proc.terminate()
            code = proc.wait(60)
    late = [s for s in samples if s[0] >= args.warmup] or samples
    report: dict[str, Any] = {
        "minutes": args.minutes, "answers": dict(seen), "server_exit": code,
        "rss_kb": {"first": samples[0][1], "last": samples[-1][1],
                   "per_hour": round(_slope_per_hour([(t, r) for t, r, _ in late]))},
        "fds": {"first": samples[0][2], "last": samples[-1][2],
                "per_hour": round(_slope_per_hour([(t, f) for t, _, f in late]), 1)},
    }
    bad = {k: v for k, v in seen.items() if "WRONG" in k or "UNEXPECTED" in k or k.endswith("!")}
    print(f"soak {args.minutes:g} min: {sum(seen.values())} answers; "
          + ", ".join(f"{k} {v}" for k, v in sorted(seen.items())))
    print(f"RSS {report['rss_kb']['first']} -> {report['rss_kb']['last']} kB "
          f"({report['rss_kb']['per_hour']:+} kB/h after {args.warmup:g} s); fds "
          f"{report['fds']['first']} -> {report['fds']['last']} ({report['fds']['per_hour']:+}/h)"
          f"; server exit {code}; unexpected answers {sum(bad.values())}")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    return 1 if bad or code != 0 else 0


if __name__ == "__main__":
    raise SystemExit(main())
