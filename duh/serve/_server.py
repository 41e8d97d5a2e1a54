"""Start the HTTP (and gRPC) front ends over one repository; drain cleanly on SIGTERM/SIGINT.

Shutdown: stop listening, answer 503 to requests arriving on open connections, finish every
request already accepted (queued or computing), then release the engines, all within the drain
timeout. A clean drain returns True (the CLI exits 0).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from duh.errors import ConfigError
from duh.serve._extras import Extras, ExtrasConfig
from duh.serve._frontend import Frontend
from duh.serve._http import build_app
from duh.serve._logging import ACCESS_LOGGER, JsonAccessLogger
from duh.serve._metrics import Metrics
from duh.serve._model import LoadOptions, ModelSource
from duh.serve._modelcache import MemoryConfig
from duh.serve._ratelimit import Limits
from duh.serve._repository import Repository, Routing
from duh.serve._security import Security, ssl_context

__all__ = ["Addresses", "ServeConfig", "ServeRequest", "run", "serve"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """Where to listen and how the server protects itself."""

    host: str = field(default="127.0.0.1", metadata={"help": "address to listen on"})
    port: int = field(default=8000, metadata={"help": "HTTP port (0: any free port)"})
    grpc_port: int | None = field(default=None, metadata={"help": "gRPC port; None: no gRPC"})
    max_body_bytes: int = field(default=64 << 20, metadata={"help": "largest request body"})
    drain_timeout_s: float = field(
        default=30.0, metadata={"help": "how long shutdown may take to finish accepted requests"}
    )
    access_log: bool = field(default=False, metadata={"help": "one JSON line per request"})
    security: Security = field(
        default_factory=Security, metadata={"help": "model control, keys and request limits"}
    )
    tls_cert: Path | None = field(
        default=None, metadata={"help": "PEM certificate chain: serve HTTPS and gRPC over TLS"}
    )
    tls_key: Path | None = field(default=None, metadata={"help": "PEM private key of tls_cert"})


@dataclass(frozen=True, slots=True)
class Addresses:
    """Where a started server listens, and what it serves."""

    http: str
    grpc: str | None
    models: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ServeRequest:
    """What to serve and how: named artifacts and/or a repository, loading, listening, routing."""

    sources: Sequence[ModelSource] = ()
    repository: Path | None = None
    options: LoadOptions = field(default_factory=LoadOptions)
    config: ServeConfig = field(default_factory=ServeConfig)
    routing: Mapping[str, Routing] = field(default_factory=dict)
    extras: ExtrasConfig = field(default_factory=ExtrasConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    limits: Limits = field(default_factory=Limits)


async def run(
    request: ServeRequest,
    *,
    on_ready: Callable[[Addresses], None] | None = None,
    stop: asyncio.Event | None = None,
) -> bool:
    """Serve until ``stop`` is set (or SIGTERM/SIGINT when ``stop`` is None); True if drained."""
    config = request.config
    tls = None
    if config.tls_cert is not None and config.tls_key is not None:
        tls = ssl_context(config.tls_cert, config.tls_key)
    elif config.tls_cert is not None or config.tls_key is not None:
        raise ConfigError("TLS needs both --tls-cert and --tls-key")
    metrics = Metrics()
    repo = Repository(request.sources, request.repository, request.options, metrics,
                      request.routing, request.memory)
    await repo.start()
    frontend = Frontend(repo, config.security, request.limits)
    extras = Extras(request.extras, frontend, metrics.registry)
    app = build_app(frontend, metrics, config.max_body_bytes, extras)
    access = logging.getLogger(ACCESS_LOGGER)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=access if config.access_log else None,
        access_log_class=JsonAccessLogger,
        shutdown_timeout=1.0,
        # A client that hangs up mid-request cancels its handler: its queue slot is freed.
        handler_cancellation=True,
    )
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, backlog=1024, ssl_context=tls)
    await site.start()
    port = runner.addresses[0][1]
    grpc_server = grpc_address = None
    if config.grpc_port is not None:
        from duh.serve._grpc import start_grpc

        pem = None
        if config.tls_cert is not None and config.tls_key is not None:
            pem = (config.tls_key.read_bytes(), config.tls_cert.read_bytes())
        grpc_server, grpc_port = await start_grpc(
            frontend, metrics, config.host, config.grpc_port, config.max_body_bytes, pem, extras
        )
        grpc_address = f"{config.host}:{grpc_port}"
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    if on_ready is not None:
        scheme = "https" if tls is not None else "http"
        on_ready(Addresses(f"{scheme}://{config.host}:{port}", grpc_address,
                           tuple(repo.names())))
    log.info("serving %s on http://%s:%d", ", ".join(repo.names()), config.host, port)
    await stop.wait()
    clean = await _shutdown(frontend, runner, site, grpc_server, repo, config.drain_timeout_s)
    await extras.close()
    return clean


async def _shutdown(
    frontend: Frontend,
    runner: web.AppRunner,
    site: web.TCPSite,
    grpc_server: object | None,
    repo: Repository,
    timeout_s: float,
) -> bool:
    deadline = time.monotonic() + timeout_s
    log.info("draining: %d request(s) in flight", frontend.inflight)
    await site.stop()  # no new connections; open ones get 503 + Connection: close
    grpc_stopped = None
    if grpc_server is not None:
        grpc_stopped = asyncio.ensure_future(grpc_server.stop(timeout_s))  # type: ignore[attr-defined]
    drained = await frontend.drain(max(0.0, deadline - time.monotonic()))
    if grpc_stopped is not None:
        await grpc_stopped
    await runner.cleanup()
    closed = await repo.close(max(0.1, deadline - time.monotonic()))
    if not (drained and closed):
        log.warning("drain timeout (%.1fs) passed with %d request(s) unfinished", timeout_s,
                    frontend.inflight)
    return drained and closed


def serve(
    request: ServeRequest, *, on_ready: Callable[[Addresses], None] | None = None
) -> bool:
    """Serve artifacts (or a repository) until SIGTERM/SIGINT; True when the drain was clean.

    Runs on uvloop when it is installed (it roughly halves the event loop's cost per request).
    """
    main = run(request, on_ready=on_ready)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
