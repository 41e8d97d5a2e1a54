"""``--json`` on every command that reports something, spelled the same, and serve's events."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import typer

import duh
from duh.cli import app

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
# Commands whose result is a report; bench writes its document with --json FILE ('-': stdout).
REPORTING = ("build", "targets", "inspect", "compare", "doctor", "serve", "batch")


def _params(command: str) -> dict[str, typer.core.TyperOption]:
    group = typer.main.get_command(app)
    cmd = group.commands[command]  # type: ignore[attr-defined]
    return {opt: p for p in cmd.params for opt in p.opts}


def test_every_reporting_command_takes_the_same_json_flag() -> None:
    flags = {c: _params(c).get("--json") for c in REPORTING}
    assert all(flags.values()), [c for c, f in flags.items() if f is None]
    assert len({(tuple(f.opts), f.help, f.is_flag) for f in flags.values() if f}) == 1
    bench = _params("bench")["--json"]
    assert not bench.is_flag and "'-' for stdout" in (bench.help or "")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM")
def test_serve_json_prints_its_ready_and_stopped_events(tmp_path: Path) -> None:
    pytest.importorskip("aiohttp")
    artifact = tmp_path / "digits.duh"
    duh.build(FIXTURES / "digits_cnn.onnx", "onnxruntime:cpu-fp32", artifact)
    cmd = [sys.executable, "-c", "from duh.cli import main; main()", "serve", str(artifact),
           "--port", "0", "--json"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        assert ready["event"] == "ready" and ready["models"] == ["digits"]
        assert ready["grpc"] is None and ready["http"].startswith("http://127.0.0.1:")
        with urllib.request.urlopen(ready["http"] + "/v2/health/ready", timeout=30) as answer:
            assert answer.status == 200
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert [json.loads(line) for line in out.splitlines()] == [{"event": "stopped", "clean": True}]
