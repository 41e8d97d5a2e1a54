"""Servers for the serve tests: real ``duh serve`` processes on 127.0.0.1, free ports, real engines."""

from __future__ import annotations

import http.client
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.serve_models import build_artifact, write_small_models

READY = re.compile(r"serving .* on https?://([\d.]+):(\d+)(?:, grpc ([\d.]+:\d+))?")


class ServerProcess:
    """A ``duh serve`` subprocess; its stdout and stderr are collected by reader threads."""

    def __init__(self, args: list[str], timeout_s: float = 90.0) -> None:
        cmd = [sys.executable, "-c", "from duh.cli import main; main()", "serve",
               "--port", "0", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, bufsize=1)
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._ready = threading.Event()
        self.host = ""
        self.port = 0
        self.grpc: str | None = None
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr),
                         daemon=True).start()
        deadline = time.monotonic() + timeout_s
        while not self._ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError("duh serve did not start:\n" + "".join(self.stderr))

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.stdout.append(line)
            match = READY.search(line)
            if match and not self._ready.is_set():
                self.host, self.port, self.grpc = match[1], int(match[2]), match[3]
                self._ready.set()

    @staticmethod
    def _read(stream: Any, sink: list[str]) -> None:
        for line in stream:
            sink.append(line)

    @property
    def address(self) -> str:
        """host:port of the HTTP endpoint (what tritonclient.http takes)."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The HTTP base URL."""
        return f"http://{self.address}"

    def request(
        self, method: str, path: str, body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request; returns status, headers and body."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def post_json(self, path: str, doc: Any) -> tuple[int, Any]:
        """POST a JSON document; returns the status and the parsed JSON answer."""
        status, _, body = self.request("POST", path, json.dumps(doc).encode(),
                                       {"Content-Type": "application/json"})
        return status, json.loads(body) if body else None

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> int:
        """Signal the server and wait for it to exit; returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def log(self) -> str:
        """Everything the server wrote so far."""
        return "".join(self.stdout) + "".join(self.stderr)


@pytest.fixture(scope="session")
def serve_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The small protocol models (plain .onnx) plus the light and heavy MLP artifacts."""
    models = write_small_models(tmp_path_factory.mktemp("serve-models"))
    models["light"] = build_artifact("light")
    models["heavy"] = build_artifact("heavy")
    return models


@pytest.fixture
def start_server() -> Iterator[Callable[..., ServerProcess]]:
    """Start ``duh serve`` processes with given arguments; all are stopped after the test."""
    started: list[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        server = ServerProcess([str(a) for a in args])
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


@pytest.fixture(scope="module")
def server(serve_models: dict[str, Path]) -> Iterator[ServerProcess]:
    """One server with every test model, gRPC on, a 1 MiB body limit and access logs on."""
    names = ("light", "heavy", "scale", "half", "strings", "fixed")
    proc = ServerProcess([*(f"{n}={serve_models[n]}" for n in names), "--grpc-port", "0",
                          "--max-body-mb", "1", "--access-log"])
    yield proc
    code = proc.stop()
    assert code == 0, proc.log()
