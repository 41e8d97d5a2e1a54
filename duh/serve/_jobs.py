"""Async jobs: ``POST /v2/models/{m}/jobs`` answers 202 with a job id at once; the request runs on
the server whether or not the client stays; ``GET /v2/models/{m}/jobs/{id}`` gives its status
(``queued``, ``running``, ``done``, ``failed``) and, when done, the v2 infer response as
``result``.

Finished jobs are kept ``ttl_s`` seconds; the store holds at most ``max_jobs`` jobs (queued,
running and finished together), and refuses more with 503 and Retry-After. A job may name a
webhook (``"parameters": {"callback_url": URL}``): its status document is POSTed there when it
finishes. Webhooks go to loopback addresses only, unless their host is in ``webhook_hosts``.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiohttp import ClientError, ClientSession, ClientTimeout, web
from prometheus_client import CollectorRegistry, Counter, Gauge

from duh.errors import ConfigError
from duh.serve._codec import InferRequest, decode_http_request, encode_http_response, json_dumps
from duh.serve._errors import ModelNotFoundError, RequestError, ServeError, UnavailableError
from duh.serve._frontend import Frontend
from duh.serve._model import ModelVersion

__all__ = ["JobConfig", "JobStore"]

log = logging.getLogger(__name__)

_HEADER = "Inference-Header-Content-Length"
_STATES = ("queued", "running", "done", "failed")
_CALLBACK = "callback_url"

# What a finished inference is handed to (drift monitoring, sample logging).
Observer = Callable[[ModelVersion, InferRequest, dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class JobConfig:
    """How long results are kept, how many jobs are held, where webhooks may go."""

    ttl_s: float = field(default=600.0, metadata={"help": "seconds a finished job is kept"})
    max_jobs: int = field(default=1000, metadata={"help": "jobs held at most (503 beyond)"})
    webhook_hosts: tuple[str, ...] = field(
        default=(), metadata={"help": "hosts webhooks may go to besides loopback addresses"}
    )
    webhook_timeout_s: float = field(default=10.0, metadata={"help": "timeout of a webhook POST"})

    def __post_init__(self) -> None:
        if not self.ttl_s > 0:
            raise ConfigError(f"--job-ttl-s {self.ttl_s}: give a number of seconds above 0")
        if self.max_jobs < 1:
            raise ConfigError(f"--max-jobs {self.max_jobs}: give at least 1")


@dataclass(slots=True)
class _Job:
    id: str
    model: str
    version: str | None
    created: float
    callback: str | None
    status: str = "queued"
    served_version: str | None = None
    started: float | None = None
    finished: float | None = None
    result: bytes | None = None  # the v2 infer response (JSON) of a job done
    error: str | None = None
    code: int | None = None
    callback_status: int | str | None = None

    def document(self) -> bytes:
        """The job's status document (the result spliced in as it was encoded)."""
        doc: dict[str, Any] = {
            "id": self.id, "model": self.model, "version": self.served_version or self.version,
            "status": self.status, "created": self.created, "started": self.started,
            "finished": self.finished,
        }
        if self.error is not None:
            doc["error"], doc["code"] = self.error, self.code
        if self.callback is not None:
            doc["callback"] = {"url": self.callback, "status": self.callback_status}
        head = json_dumps(doc)
        if self.result is None:
            return head
        return head[:-1] + b',"result":' + self.result + b"}"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class JobStore:
    """The jobs of one server: submission, status, expiry, webhooks."""

    def __init__(self, config: JobConfig, frontend: Frontend, registry: CollectorRegistry,
                 observe: Observer | None = None) -> None:
        self.config = config
        self.frontend = frontend
        self.observe = observe
        self._jobs: dict[str, _Job] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: ClientSession | None = None
        r = registry
        self.held = Gauge("duh_jobs", "Async jobs held, by status", ("status",), registry=r)
        for state in _STATES:
            self.held.labels(state).set_function(functools.partial(self._count, state))
        self.submitted = Counter("duh_jobs_submitted", "Async jobs accepted", ("model",),
                                 registry=r)
        self.rejected = Counter("duh_jobs_rejected",
                                "Async jobs refused because the store was full (--max-jobs)",
                                registry=r)
        self.webhooks = Counter("duh_job_webhooks",
                                "Webhook POSTs of finished jobs, by outcome (ok, failed)",
                                ("outcome",), registry=r)

    def _count(self, state: str) -> int:
        return sum(1 for j in self._jobs.values() if j.status == state)

    def _expire(self) -> None:
        now = time.time()
        gone = [k for k, j in self._jobs.items()
                if j.finished is not None and now - j.finished > self.config.ttl_s]
        for key in gone:
            del self._jobs[key]

    def _check_callback(self, url: str) -> None:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.scheme not in ("http", "https") or not host:
            raise RequestError(f"callback_url {url[:200]!r} is not an http(s) URL")
        if not _loopback(host) and host not in self.config.webhook_hosts:
            raise RequestError(
                f"callback_url host {host!r} is not allowed: webhooks go to loopback addresses "
                "only, unless the server lists the host in --allow-webhook-hosts"
            )

    async def submit(self, request: web.Request) -> web.Response:
        """Accept a job: check it, decode it, answer 202 with its id; it runs on its own."""
        frontend = self.frontend
        match = request.match_info
        frontend.security.check_infer(request.headers)
        frontend.rate_limit(request.headers, request.remote, match["model"])
        self._expire()
        if len(self._jobs) >= self.config.max_jobs:
            self.rejected.inc()
            finished = [j.finished for j in self._jobs.values() if j.finished is not None]
            wait = self.config.ttl_s - (time.time() - min(finished)) if finished else 1.0
            raise UnavailableError(
                f"the job store is full ({self.config.max_jobs} jobs held, --max-jobs); fetch "
                "finished results and retry later, or raise --max-jobs",
                "jobs_full", retry_after_s=max(1, int(wait) + 1),
            )
        # A job for a model the server lacks fails at submission (one not resident under
        # --memory-budget is served: its job loads it, as an inference request would).
        if not frontend.repository.serves(match["model"]):
            frontend.repository.route(match["model"], match.get("version"))  # raises: not found
        body = await request.read()
        decoded = decode_http_request(body, request.headers.get(_HEADER))
        callback = self._callback(body, request.headers.get(_HEADER))
        if callback is not None:
            self._check_callback(callback)
        frontend.admit()  # counted in flight: a drain waits for accepted jobs
        job = _Job(secrets.token_hex(16), match["model"], match.get("version"), time.time(),
                   callback)
        self._jobs[job.id] = job
        self.submitted.labels(job.model).inc()
        task = asyncio.get_running_loop().create_task(self._run(job, decoded))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        location = f"/v2/models/{job.model}/jobs/{job.id}"
        return web.Response(body=job.document(), status=202, content_type="application/json",
                            headers={"Location": location})

    @staticmethod
    def _callback(body: bytes, header: str | None) -> str | None:
        head = body[: int(header)] if header is not None else body
        params = json.loads(head).get("parameters") or {}
        url = params.get(_CALLBACK)
        if url is not None and not isinstance(url, str):
            raise RequestError(f"parameter {_CALLBACK!r} must be a URL string, got {url!r}")
        return url

    async def _run(self, job: _Job, decoded: InferRequest) -> None:
        frontend = self.frontend
        started = time.perf_counter()
        job.status, job.started = "running", time.time()
        try:
            version, request, outputs = await frontend.infer(
                job.model, job.version, lambda: decoded, started
            )
            # A job's result is one JSON document: every output as JSON data.
            payload, _ = encode_http_response(
                version.name, version.version, request.id, outputs, [False] * len(outputs)
            )
            frontend.succeeded(version, started)
            job.result, job.served_version, job.status = payload, version.version, "done"
            if self.observe is not None:
                self.observe(version, request, outputs)
        except ServeError as exc:
            job.status, job.error, job.code = "failed", str(exc), exc.status
        except Exception as exc:
            # A bug, not the request's fault: the job says so (500) and the log has the trace.
            log.exception("job %s failed", job.id)
            job.status, job.error, job.code = "failed", f"internal error: {exc}", 500
        finally:
            job.finished = time.time()
            frontend.release()
        if job.callback is not None:
            await self._notify(job)

    async def _notify(self, job: _Job) -> None:
        assert job.callback is not None
        if self._session is None:
            timeout = ClientTimeout(total=self.config.webhook_timeout_s)
            self._session = ClientSession(timeout=timeout)
        try:
            async with self._session.post(job.callback, data=job.document(),
                                          headers={"Content-Type": "application/json"}) as resp:
                job.callback_status = resp.status
            self.webhooks.labels("ok" if resp.status < 400 else "failed").inc()
        except (ClientError, TimeoutError, OSError) as exc:
            job.callback_status = f"failed: {type(exc).__name__}: {exc}"[:300]
            self.webhooks.labels("failed").inc()
            log.warning("job %s: webhook %s failed (%s)", job.id, job.callback, exc)

    async def status(self, request: web.Request) -> web.Response:
        """A job's status document (with its result once done)."""
        self.frontend.security.check_infer(request.headers)
        self._expire()
        match = request.match_info
        job = self._jobs.get(match["job"])
        if job is None or job.model != match["model"]:
            raise ModelNotFoundError(
                f"no job {match['job'][:80]!r} for model {match['model']!r}: its id is wrong, "
                f"or it finished more than {self.config.ttl_s:g} s ago (--job-ttl-s)"
            )
        return web.Response(body=job.document(), content_type="application/json")

    async def close(self) -> None:
        """Wait for the webhooks of finished jobs (briefly), then release the HTTP client."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.config.webhook_timeout_s)
        if self._session is not None:
            await self._session.close()
